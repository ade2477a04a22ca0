/**
 * Staging areas: containers/storage's `internal/tempdir` (and the overlay
 * driver's `staging/`), built on the staging lock files of `lockfile.ts`.
 * The protocol (naming, lifetime, commit, recovery) is written down once, in
 * docs/staging-protocol.md; this file opens roots and creates and lists
 * entries, `entry.ts` is the held entry, `sweep.ts` the recovery.
 */
import { type LockOwner } from '@x/core';
import { constants as fsc } from 'node:fs';
import { mkdir, open, opendir, realpath, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Entry, type StagingDir } from './entry.js';
import { checkObject, checkPath, checkSignal, errnoOf, makeDirs, osError, show } from './internal/fsutil.js';
import { AREA_MARKER, type Layout } from './naming.js';
import { localOwnership, SERVICE_MARKER, type EntryOwnership } from './ownership.js';
import { etcdOwnership, isLockService, type EntryLockService } from './ownership-etcd.js';
import { type RecoverOptions, type RecoverReport } from './report.js';

export { AREA_MARKER } from './naming.js';

/** Fresh ids `create()` draws when `<id>` is taken by garbage. */
const CREATE_ATTEMPTS = 100;

/** Options of {@link StagingArea.open}. */
export interface StagingAreaOptions {
  /** Create the root (and missing parents) when it does not exist. @defaultValue `true` */
  create?: boolean | undefined;
  /** Permission bits of a root we create (the umask applies). @defaultValue `0o700` */
  mode?: number | undefined;
  /**
   * Keep entry ownership in a lock service shared by several hosts instead
   * of kernel-locked lock files: an `EtcdLocks` of @x/etcd, whose key prefix
   * belongs to this area alone. An entry is then owned while its key exists
   * under its owner's lease, so `recover()` on any host reclaims exactly the
   * entries whose owner's lease is gone. Every process using the root must
   * pass the same service. @defaultValue local lock files
   */
  locks?: EntryLockService | undefined;
}

/** Options of {@link StagingArea.list}. */
export interface ListOptions {
  /** Stops the listing: the iterator rejects with `signal.reason`. */
  signal?: AbortSignal | undefined;
}

/** One entry of a staging area, as {@link StagingArea.list} sees it. */
export interface StagingEntry {
  /** The entry's id. */
  id: string;
  /**
   * Its staging directory: `<root>/<id>`, or `<root>/temp-dir-<id>` for an
   * entry of containers/storage's layout (see {@link StagingEntry.layout}).
   */
  path: string;
  /** Who made it: xstage (`<id>/`) or containers/storage (`temp-dir-<id>/`, podman, buildah). */
  layout: Layout;
  /** Its lock file, `<root>/lock-<id>` (with `locks`: its etcd key, or the key prefix when free). */
  lockPath: string;
  /** Whether the staging directory exists. */
  hasDir: boolean;
  /**
   * The lock's state: `held` (a live entry), `free` (its holder is gone: the
   * entry is stale), `missing` (a directory without a lock file: stale), or
   * `unknown` (the probe failed: see `error`).
   */
  state: 'held' | 'free' | 'missing' | 'unknown';
  /** The holder (held), or the last holder recorded in the file (free); `null` when not known. */
  owner: LockOwner | null;
  /** Why `state` is `unknown`. */
  error?: Error | undefined;
}

/** Whether a directory holds no names other than the area marker. */
async function isEmpty(dir: string): Promise<boolean> {
  const d = await opendir(dir);
  try {
    for (let e = await d.read(); e !== null; e = await d.read())
      if (e.name !== AREA_MARKER && e.name !== SERVICE_MARKER) return false;
    return true;
  } finally {
    await d.close();
  }
}

/** Creates the empty marker without following a symlink planted at its name. */
async function writeMarker(root: string): Promise<void> {
  try {
    await (await open(join(root, AREA_MARKER), fsc.O_WRONLY | fsc.O_CREAT | fsc.O_NOFOLLOW, 0o600)).close();
  } catch (err) {
    // A root we may only read (someone else's area) is still one to list;
    // a symlink at the marker's name (ELOOP) is not followed.
    if (!['EACCES', 'EPERM', 'EROFS', 'ELOOP'].includes(errnoOf(err) ?? '')) throw err;
  }
}

/**
 * A staging area: a root directory of locked staging directories
 * (containers/storage `internal/tempdir`).
 *
 * @remarks See docs/staging-protocol.md: a staging
 * directory exists under its name only while its lock is held, `recover()`
 * never deletes a live entry (held by any process, this one included, or by
 * a classic POSIX `fcntl` holder such as podman), never follows a symlink and
 * never deletes outside the root. Safe to use from many processes at once,
 * including several running `recover()` while others create.
 *
 * @example
 * ```ts
 * const area = await StagingArea.open('/var/lib/store/staging');
 * await area.recover(); // reclaim what crashed writers left behind
 *
 * await using dir = await area.create();
 * await writeFile(join(dir.path, 'manifest.json'), manifest);
 * await dir.stage('/var/lib/store/tmp/layer.tar'); // -> <dir>/0-layer.tar
 * await dir.commit('/var/lib/store/layers/sha256-9f2c'); // atomic, fsynced
 * ```
 */
export class StagingArea {
  /** Absolute path of the root directory, symlinks resolved. */
  readonly root: string;
  readonly #own: EntryOwnership;

  private constructor(root: string, own: EntryOwnership) {
    this.root = root;
    this.#own = own;
  }

  /**
   * Opens the staging area at `root`, creating the directory (0o700, and
   * missing parents) unless `create: false`.
   *
   * @remarks Opening does not recover: call {@link StagingArea.recover} at
   * startup, as containers/storage does on every store load. With `create`
   * (the default) it also leaves an empty marker file, `.xstage-area`, in a
   * root it created or that is empty: `xstage recover` and `xstage status`
   * refuse a directory without it, so a mistyped path is never swept. A
   * root that is a symlink is resolved: `root` is the real path.
   *
   * @param root - the root directory
   * @param options - `create`, `mode`
   * @returns the area
   * @throws `ENOENT` when the root is missing and `create` is false;
   * `LockError` `ENOTSUP` when the root's entries are owned the other way
   * (a root of `locks` opened without, or a populated local root with);
   * `ENOTDIR` when it is not a directory; other OS errors with `code` and
   * `path`; `TypeError` for bad arguments.
   *
   * @example
   * ```ts
   * const area = await StagingArea.open('/var/lib/store/staging');
   * const report = await area.recover();
   * console.log(`reclaimed ${report.removed} abandoned entries`);
   * ```
   */
  static async open(root: string, options?: StagingAreaOptions): Promise<StagingArea> {
    const abs = resolve(checkPath(root, 'root'));
    const o = checkObject(options, ['create', 'mode', 'locks']);
    if (o.locks !== undefined && !isLockService(o.locks)) {
      throw new TypeError(`Expected \`locks\` to be an EtcdLocks (prefix, tryLock, list), got ${show(o.locks)}`);
    }
    const own = o.locks === undefined ? localOwnership : etcdOwnership(o.locks as EntryLockService);
    const create = o.create ?? true;
    const mode = o.mode ?? 0o700;
    if (typeof create !== 'boolean') throw new TypeError(`Expected \`create\` to be a boolean, got ${show(create)}`);
    if (typeof mode !== 'number' || !Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
      throw new TypeError(`Expected \`mode\` to be an integer from 0 to 0o7777, got ${show(mode)}`);
    }
    // A file there: ENOTDIR below.
    const made = create && makeDirs(abs, mode);
    // stat, not lstat: a root that is a symlink to a directory (a store moved
    // to another disk) is that directory; we keep its real path, so checks
    // that compare paths with the root (commit's dest) see through the link.
    const st = await stat(abs);
    if (!st.isDirectory()) throw osError('ENOTDIR', 'opendir', abs, 'not a directory');
    const real = await realpath(abs);
    // The marker goes only into a root we created or that is still empty:
    // opening a mistyped, populated directory must not make it sweepable.
    const fresh = create && (made || (await isEmpty(real)));
    if (fresh) await writeMarker(real);
    await own.adopt(real, fresh);
    return new StagingArea(real, own);
  }

  /**
   * Creates a new entry: its lock file, already locked, then its staging
   * directory.
   *
   * @remarks The directory never exists without its lock being held (see the
   * protocol in docs/staging-protocol.md). A failure leaves nothing behind.
   *
   * @returns the held staging directory
   * @throws `LockError` `ENOTSUP` without kernel locks; OS errors
   * (`ENOENT` when the root was removed, `EACCES`, `ENOSPC`...) with `code`
   * and `path`.
   *
   * @example
   * ```ts
   * const dir = await area.create();
   * try {
   *   await writeFile(join(dir.path, 'blob'), data);
   *   await dir.commit(join(store, digest));
   * } finally {
   *   await dir.cleanup(); // no-op after a commit
   * }
   * ```
   */
  async create(): Promise<StagingDir> {
    for (let attempt = 0; ; attempt++) {
      const lock = await this.#own.claim(this.root);
      const id = lock.id;
      try {
        await mkdir(join(this.root, id), { mode: 0o700 });
        return new Entry(this.root, id, lock);
      } catch (err) {
        await lock.unlockAndDelete().catch(() => undefined);
        if (errnoOf(err) !== 'EEXIST' || attempt + 1 >= CREATE_ATTEMPTS) throw err;
        // Garbage of a dead writer under this id: never adopt it, draw again.
      }
    }
  }

  /**
   * Lists the entries of the area with the state of each lock, without
   * changing anything (no lock file is created or deleted, no owner record
   * rewritten).
   *
   * @remarks Streams the root: memory does not grow with the number of
   * entries. Each entry is listed once (by its lock file, or by its
   * directory when the lock file is missing). Hidden names are skipped. The
   * state is a snapshot: it may change right after.
   *
   * @param options - `signal`
   * @returns an async iterator of {@link StagingEntry}
   * @throws OS errors of reading the root; `signal.reason` when aborted.
   *
   * @example
   * ```ts
   * for await (const entry of area.list()) {
   *   if (entry.state === 'held') console.log(entry.id, 'held by pid', entry.owner?.pid);
   * }
   * ```
   */
  async *list(options?: ListOptions): AsyncGenerator<StagingEntry, void, undefined> {
    const signal = checkSignal(checkObject(options, ['signal']).signal);
    signal?.throwIfAborted();
    yield* this.#own.list(this.root, signal);
  }

  /**
   * Reclaims every entry whose lock is free: deletes its staging directory,
   * then its lock file. Live entries are left alone.
   *
   * @remarks Streams the root (1024 names at a time), one entry at a time,
   * so memory stays bounded for any number of entries; each entry is one
   * native call of synchronous system calls, run in slices of a few
   * milliseconds (a huge entry spans several), yielding to the event loop
   * in between, never occupying libuv's threadpool. Never deletes a
   * live entry (held by another process, by this process, or by a classic
   * POSIX `fcntl` holder), never follows a symlink, never enters another
   * filesystem, never deletes outside the root; see docs/staging-protocol.md.
   * Safe to run from several processes at once while others create. An
   * entry that fails is recorded in `errors` and the sweep goes on. A dry run
   * deletes nothing and creates no lock file.
   *
   * @param options - `dryRun`, `onProgress`, `signal`
   * @returns the counts, bytes freed and per-entry errors
   * @throws OS errors of reading the root itself (`ENOENT` when it is gone);
   * `signal.reason` when aborted (after the entries in progress finish);
   * what `onProgress` throws; `TypeError` for bad options.
   *
   * @example
   * ```ts
   * const report = await area.recover({
   *   onProgress: (p) => process.stderr.write(`\rscanned ${p.scanned}, removed ${p.removed}`),
   * });
   * for (const { path, error } of report.errors) console.warn(`${path}: ${error.message}`);
   * ```
   */
  async recover(options?: RecoverOptions): Promise<RecoverReport> {
    return this.#own.recover(this.root, options);
  }
}
