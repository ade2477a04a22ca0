/**
 * Staging areas: containers/storage's `internal/tempdir` (and the overlay
 * driver's `staging/`), built on the staging lock files of `lockfile.ts`.
 *
 * The protocol, once:
 *
 *   A staging area is a root directory (created 0o700) shared by every
 *   process of a store. Each writer gets an *entry*: a lock file
 *   `lock-<id>` and a private staging directory `<id>` (0o700). It fills the
 *   directory, then either commits it (the directory itself is renamed to
 *   its final place) or abandons it (cleanup). Whatever a dead writer left
 *   behind, any process reclaims with `recover()`, typically at startup.
 *
 *     /var/lib/store/staging/            the root (0o700)
 *       lock-3k9x0q2m1a7f                held by a live writer
 *       3k9x0q2m1a7f/                    its staging directory
 *         0-layer.tar                    stage('/var/lib/store/tmp/layer.tar')
 *         1-config.json                  stage('/var/lib/store/tmp/config.json')
 *         manifest                       written in place by the writer
 *       lock-1zz0c8r4d2kq                free: its writer was SIGKILLed
 *       1zz0c8r4d2kq/                    so recover() deletes it, then the lock
 *       .xlock-ab12-7f3e9a-4.tmp         a lock file being published by
 *                                        createAndLock (skipped while locked)
 *
 *   Naming. `<id>` is the random part (64 bits, base 36) of the lock file's
 *   name, chosen by `createAndLock(root, 'lock-')`, which publishes the file
 *   already locked and never replaces an existing name. So the ids of live
 *   entries are unique, and two areas (or processes) on one root never share
 *   an entry. Staged paths are renamed to `<id>/<n>-<basename>`, `n`
 *   counting from 0 per entry, so names never collide and keep their
 *   basename after the counter prefix.
 *
 *   Lifetime and the invariant. An entry's directory exists under the
 *   sweep's naming (`<id>`) only while `lock-<id>` is held:
 *     create   1. `createAndLock(root, 'lock-')`: `lock-<id>` appears locked
 *                 (there is no moment at which a sweeper could lock it);
 *              2. `mkdir(<id>)`. The lock is held from before the directory
 *                 exists, so mkdir under the final name is enough: no hidden
 *                 name and rename are needed. If `<id>` already exists (the
 *                 garbage of a long-dead writer with the same id), the lock
 *                 is deleted and a fresh id is drawn: garbage is never adopted.
 *     cleanup  remove `<id>`, *then* delete the lock (unlink while holding,
 *              then unlock). Idempotent.
 *     commit   fsync the tree, rename `<id>` to `dest` (refusing an existing
 *              `dest`), fsync `dest`'s parent and the root, *then* delete the
 *              lock. The handle is dead afterwards (ERELEASED).
 *   A sweeper deletes `<id>` only while it holds `lock-<id>`. The writer holds
 *   it from before `<id>` exists until after `<id>` is gone (removed or
 *   renamed away), so a sweeper can take it only when the directory is gone
 *   or its writer is dead: a live entry is never deleted. A sweeper that saw
 *   the directory without a lock file creates `lock-<id>` to take it; that
 *   only happens to garbage, because a live directory always has its lock.
 *   A crash at any step leaves at worst `lock-<id>` (unlocked by the kernel
 *   the instant the process died), `<id>`, or an unlocked `.xlock-*.tmp`: all
 *   reclaimable at once.
 *
 *   Commit without replacing. POSIX `rename(2)` of a directory fails when the
 *   target is a non-empty directory (ENOTEMPTY/EEXIST) or not a directory
 *   (ENOTDIR), but silently replaces an *empty* directory. Node has no
 *   `renameat2(RENAME_NOREPLACE)` and `@x/core` does not export its addon's,
 *   and `link` does not work for directories. Reserving `dest` with
 *   `mkdir(dest)` first would make an empty `dest` visible to readers (and
 *   leave it behind after a crash). So commit checks `dest` with `lstat`
 *   (EEXIST, nothing moved), then renames, and maps a rename that met a
 *   non-empty directory or a file to EEXIST. The one window left: an *empty*
 *   directory created at `dest` by someone else between the check and the
 *   rename is replaced.
 *
 *   Recovery. `recover()` streams the root with `opendir` (memory does not
 *   grow with the number of entries) and handles one entry at a time, with
 *   synchronous system calls in slices of ~4 ms between which the event loop
 *   runs (a threadpool hop costs more than the calls; see `Slicer` in
 *   `internal/fsutil.ts`):
 *     lock-<id>      take the lock without waiting. Held (by any process,
 *                    this one included, or by a classic POSIX fcntl holder
 *                    such as podman or Python's lockf) means live: left
 *                    alone. Taken: remove `<id>`, then the lock file. The
 *                    lock is taken with `create: false`, never by opening
 *                    `lock-<id>` with O_CREAT: if its owner finishes in that
 *                    instant the open (or the inode check after locking)
 *                    fails with ENOENT and the sweep creates nothing, so it
 *                    never mistakes a finished entry for an abandoned one.
 *     <id>           if `lock-<id>` exists, its own entry decides; if not,
 *                    the sweep publishes `lock-<id>` already locked
 *                    (`createLocked`: hidden create, lock, rename without
 *                    replacing), so concurrent sweepers exclude each other
 *                    and none can take the new lock file for an abandoned
 *                    entry; then, if `<id>` is still there, as above.
 *     .xstage-area   the marker `open()` leaves (see `AREA_MARKER`): kept.
 *     .xlock-*.tmp   an in-flight lock file (being published by
 *                    createAndLock): deleted
 *                    when nobody holds it, never counted as an entry.
 *     other names    starting with `.`, or `lock-` with an empty or dot id:
 *                    ignored.
 *   Removal walks with `lstat`: a symlink is unlinked, never followed (a link
 *   pointing out of the root deletes the link, not its target); a directory
 *   on another filesystem (a mount point, e.g. an overlay `merged` left
 *   mounted) is not entered and is reported as an EBUSY error for its entry
 *   (whose lock file then stays, for a later sweep), while the sweep goes on.
 *   Every path deleted is `<root>/<name>/...` with `<name>` read from the
 *   root. Errors are collected per entry; the sweep never stops at the
 *   first. A dry run deletes nothing and creates no lock file: it probes each
 *   lock with a shared lock taken with `create: false` (see
 *   `internal/probe.ts`).
 *
 *   The root is 0o700: only its owner can swap a directory for a symlink
 *   between a sweep's `lstat` and its `opendir`, and that owner can delete
 *   the files anyway.
 */
import { createLocked, isLockError, LockError, tryLock, type FileLock, type LockOwner } from '@x/core';
import { remove } from 'fs-extra/esm';
import { constants as fsc, unlinkSync } from 'node:fs';
import { lstat, mkdir, open, opendir, realpath, rename, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { createAndLock, type StagingLockFile } from './lockfile.js';
import { checkPath, errnoOf, fsyncPath, lstatOrNull, lstatQuiet, osError, removeTree, show, Slicer, syncTree } from './internal/fsutil.js';
import { probeLock } from './internal/probe.js';

const LOCK_PREFIX = 'lock-';
/**
 * An empty file `open()` leaves in the root, so that tools (the CLI's
 * `recover` and `status`) can refuse a directory that is not a staging area:
 * a sweep deletes every unlocked entry it finds.
 */
export const AREA_MARKER = '.xstage-area';
/** Fresh ids `create()` draws when `<id>` is taken by garbage. */
const CREATE_ATTEMPTS = 100;

/** Options of {@link StagingArea.open}. */
export interface StagingAreaOptions {
  /** Create the root (and missing parents) when it does not exist. @defaultValue `true` */
  create?: boolean;
  /** Permission bits of a root we create (the umask applies). @defaultValue `0o700` */
  mode?: number;
}

/** Options of {@link StagingDir.commit}. */
export interface CommitOptions {
  /**
   * fsync every regular file and directory of the staging directory before
   * the rename. Turn it off only when the contents were already made durable.
   * The parent of `dest` and the root are fsynced after the rename either way.
   * @defaultValue `true`
   */
  syncContents?: boolean;
}

/** The running counts {@link RecoverOptions.onProgress} receives. */
export interface RecoverProgress {
  /** Entries examined so far (see {@link RecoverReport.scanned}). */
  scanned: number;
  /** Entries reclaimed so far (a dry run: that would be). */
  removed: number;
  /** Entries left alone because they are held. */
  live: number;
  /** Bytes of regular files freed so far (a dry run: that would be). */
  bytesFreed: number;
  /** Entries that failed so far. */
  errors: number;
}

/** Options of {@link StagingArea.recover}. */
export interface RecoverOptions {
  /** Report what would be reclaimed; delete nothing and create no lock file. @defaultValue `false` */
  dryRun?: boolean;
  /** Called after each entry with the running counts. An exception it throws ends the sweep and rejects. */
  onProgress?: (progress: RecoverProgress) => void;
  /** Stops the sweep: entries in progress finish, then the promise rejects with `signal.reason`. */
  signal?: AbortSignal;
}

/** One entry that could not be recovered. */
export interface RecoverError {
  /** The path that failed (the staging directory, or the lock file). */
  path: string;
  /** The error, with its errno `code` for OS errors. */
  error: Error;
}

/** What {@link StagingArea.recover} did. */
export interface RecoverReport {
  /**
   * Staging entries examined, each once: by its `lock-<id>`, or by its
   * `<id>` directory when it has no lock file. Hidden in-flight lock files
   * (`.xlock-*.tmp`) are deleted when free but not counted. Always
   * `scanned = removed + live + errors.length`; entries that finish while
   * the sweep looks at them are not counted at all.
   */
  scanned: number;
  /** Entries reclaimed (a dry run: that would be). */
  removed: number;
  /** Entries left alone because their lock is held. */
  live: number;
  /** Sum of the sizes of the regular files deleted (a dry run: that would be). */
  bytesFreed: number;
  /** The entries that failed, in the order they failed. */
  errors: RecoverError[];
}

/** Options of {@link StagingArea.list}. */
export interface ListOptions {
  /** Stops the listing: the iterator rejects with `signal.reason`. */
  signal?: AbortSignal;
}

/** One entry of a staging area, as {@link StagingArea.list} sees it. */
export interface StagingEntry {
  /** The entry's id. */
  id: string;
  /** Its staging directory, `<root>/<id>`. */
  path: string;
  /** Its lock file, `<root>/lock-<id>`. */
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
  error?: Error;
}

/** A held staging directory. Created by {@link StagingArea.create}. */
export interface StagingDir {
  /** The entry's id. */
  readonly id: string;
  /** Absolute path of the staging directory, `<root>/<id>`. Write into it freely. */
  readonly path: string;
  /** Absolute path of its lock file, `<root>/lock-<id>`. */
  readonly lockPath: string;
  /**
   * Moves an existing file or directory into the staging directory by
   * `rename`, as `<n>-<basename>` (`n` counts from 0 per entry).
   *
   * @param path - what to move; must be on the root's filesystem
   * @returns the new path inside the staging directory
   * @throws `LockError` `ERELEASED` after commit or cleanup (or while they
   * run); OS errors of `rename` (`ENOENT`, `EXDEV`...) with `code` and `path`;
   * `TypeError` for a bad `path`.
   */
  stage(path: string): Promise<string>;
  /**
   * Makes the staging directory itself `dest` by `rename`, durably, then
   * deletes the lock. The handle is dead afterwards.
   *
   * @remarks `dest` must not exist: `EEXIST`, and nothing is moved (see the
   * protocol comment for the one window a plain `rename` leaves). Before the
   * rename the tree is fsynced (unless `syncContents: false`); after it,
   * `dest`'s parent and the root. A failed commit leaves the entry intact and
   * held, so it can be committed elsewhere or cleaned up. `dest` must be on
   * the root's filesystem (`EXDEV` otherwise) and not directly in the root
   * (the sweep would take it for an entry).
   *
   * @param dest - the final path
   * @param options - `syncContents`
   * @throws `EEXIST` (OS-style, `code` and `path`) when `dest` exists;
   * `LockError` `ERELEASED` after commit or cleanup; other OS errors;
   * `TypeError` for a bad `dest` or one directly inside the root.
   */
  commit(dest: string, options?: CommitOptions): Promise<void>;
  /**
   * Removes the staging directory and its contents, then deletes the lock.
   * Idempotent: later calls, and calls after `commit`, resolve at once.
   *
   * @throws the OS error of the removal (the lock is deleted anyway: the
   * leftovers are then stale and `recover()` reclaims them)
   */
  cleanup(): Promise<void>;
  /** Same as `cleanup()`, so `await using dir = await area.create()` works. */
  [Symbol.asyncDispose](): Promise<void>;
}

function released(path: string): LockError {
  return new LockError('ERELEASED', path, `the staging directory '${path}' was already committed or cleaned up`);
}

/** An OS-style EEXIST for `commit`. */
function destExists(dest: string, cause?: unknown): NodeJS.ErrnoException {
  return osError('EEXIST', 'rename', dest, 'file already exists', cause);
}

/**
 * Renames `from` to `to` unless `to` exists (see the protocol comment: the
 * only window is an empty directory created at `to` in between).
 */
async function renameNoReplace(from: string, to: string): Promise<void> {
  if (await lstatOrNull(to)) throw destExists(to);
  try {
    await rename(from, to);
  } catch (err) {
    const code = errnoOf(err);
    if (code === 'ENOTEMPTY' || code === 'EEXIST') throw destExists(to, err);
    if (code === 'ENOTDIR' && (await lstatOrNull(to).catch(() => null))) throw destExists(to, err);
    throw err;
  }
}

class Entry implements StagingDir {
  readonly id: string;
  readonly path: string;
  readonly lockPath: string;
  readonly #root: string;
  #lock: StagingLockFile | null;
  #counter = 0;
  #state: 'open' | 'busy' | 'dead' = 'open';
  #pending: Promise<void> = Promise.resolve();
  readonly #staging = new Set<Promise<unknown>>();

  constructor(root: string, id: string, lock: StagingLockFile) {
    this.#root = root;
    this.id = id;
    this.path = join(root, id);
    this.lockPath = lock.path;
    this.#lock = lock;
  }

  async stage(path: string): Promise<string> {
    checkPath(path, 'path');
    const name = basename(path);
    if (name === '' || name === '.' || name === '..') throw new TypeError(`Expected \`path\` to name a file or directory, got ${show(path)}`);
    if (this.#state !== 'open') throw released(this.path);
    const target = join(this.path, `${this.#counter++}-${name}`);
    const move = rename(path, target);
    this.#staging.add(move);
    try {
      await move;
    } finally {
      this.#staging.delete(move);
    }
    return target;
  }

  async commit(dest: string, options?: CommitOptions): Promise<void> {
    const target = resolve(checkPath(dest, 'dest'));
    if (options !== undefined && (typeof options !== 'object' || options === null)) {
      throw new TypeError(`Expected \`options\` to be an object, got ${show(options)}`);
    }
    const { syncContents = true, ...rest } = options ?? {};
    const unknown = Object.keys(rest)[0];
    if (unknown !== undefined) throw new TypeError(`Unknown option \`${unknown}\` (known: syncContents)`);
    if (typeof syncContents !== 'boolean') throw new TypeError(`Expected \`syncContents\` to be a boolean, got ${show(syncContents)}`);
    if (dirname(target) === this.#root || target === this.#root) {
      throw new TypeError(`Expected \`dest\` to be outside the staging root '${this.#root}', got ${show(dest)}`);
    }
    if (this.#state !== 'open') throw released(this.path);
    this.#state = 'busy';
    const run = this.#commit(target, syncContents);
    this.#pending = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  async #commit(target: string, syncContents: boolean): Promise<void> {
    let moved = false;
    try {
      await Promise.allSettled(this.#staging);
      // The root under another name is the root: refuse it like the lexical check does.
      // stat, not lstat: a parent that is a symlink to the root is the root.
      const [parent, root] = await Promise.all([stat(dirname(target)).catch(() => null), lstat(this.#root)]);
      if (parent && parent.dev === root.dev && parent.ino === root.ino) {
        throw new TypeError(`Expected \`dest\` to be outside the staging root '${this.#root}', got ${show(target)}`);
      }
      if (syncContents) await syncTree(this.path);
      await renameNoReplace(this.path, target);
      moved = true;
    } finally {
      if (!moved) this.#state = 'open';
    }
    // Committed: whatever happens now, the handle is dead.
    const lock = this.#lock!;
    this.#lock = null;
    this.#state = 'dead';
    let error: unknown;
    try {
      await fsyncPath(dirname(target), true);
      await fsyncPath(this.#root, true);
    } catch (err) {
      error = err;
    }
    try {
      await lock.unlockAndDelete();
    } catch (err) {
      error ??= err;
    }
    if (error !== undefined) throw error;
  }

  async cleanup(): Promise<void> {
    while (this.#state === 'busy') await this.#pending;
    if (this.#state === 'dead') return;
    this.#state = 'busy';
    const run = this.#cleanup();
    this.#pending = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  async #cleanup(): Promise<void> {
    const lock = this.#lock!;
    let error: unknown;
    try {
      await Promise.allSettled(this.#staging);
      // Our own directory: fs-extra's remove (fs.rm, recursive) never follows symlinks.
      await remove(this.path);
    } catch (err) {
      error = err;
    }
    this.#lock = null;
    this.#state = 'dead';
    try {
      await lock.unlockAndDelete();
    } catch (err) {
      error ??= err;
    }
    if (error !== undefined) throw error;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.cleanup();
  }
}

/** How the sweep reads one name of the root. */
type Kind = { kind: 'lock'; id: string } | { kind: 'dir'; id: string } | { kind: 'hidden' } | { kind: 'ignore' };

function classify(name: string): Kind {
  if (name.startsWith('.')) return /^\.xlock-.+\.tmp$/.test(name) ? { kind: 'hidden' } : { kind: 'ignore' };
  if (name.startsWith(LOCK_PREFIX)) {
    const id = name.slice(LOCK_PREFIX.length);
    // `lock-`, `lock-.`, `lock-..` would name the root or its parent.
    return id === '' || id.startsWith('.') ? { kind: 'ignore' } : { kind: 'lock', id };
  }
  return { kind: 'dir', id: name };
}

/** What the sweep did with one name. */
type Outcome =
  | { kind: 'skip' }
  | { kind: 'live' }
  | { kind: 'removed'; bytes: number }
  | { kind: 'error'; path: string; error: Error };

const skip: Outcome = { kind: 'skip' };
const live: Outcome = { kind: 'live' };

/** Whether a directory holds no names other than the area marker. */
async function isEmpty(dir: string): Promise<boolean> {
  const d = await opendir(dir);
  try {
    for (let e = await d.read(); e !== null; e = await d.read()) if (e.name !== AREA_MARKER) return false;
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

/** Releases a sweep's lock; a failed release is the entry's error unless it already has one. */
async function releasing(lock: FileLock, outcome: Outcome, lockPath: string): Promise<Outcome> {
  try {
    await lock.release();
  } catch (err) {
    if (outcome.kind !== 'error') return { kind: 'error', path: lockPath, error: asError(err) };
  }
  return outcome;
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

function checkSignal(signal: unknown): AbortSignal | undefined {
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw new TypeError(`Expected \`signal\` to be an AbortSignal, got ${show(signal)}`);
  return signal;
}

function checkObject(options: unknown, known: readonly string[]): Record<string, unknown> {
  if (options === undefined) return {};
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new TypeError(`Expected \`options\` to be an object, got ${show(options)}`);
  }
  for (const key of Object.keys(options)) if (!known.includes(key)) throw new TypeError(`Unknown option \`${key}\` (known: ${known.join(', ')})`);
  return options as Record<string, unknown>;
}

/**
 * A staging area: a root directory of locked staging directories
 * (containers/storage `internal/tempdir`).
 *
 * @remarks See the protocol comment at the top of `area.ts`: a staging
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

  private constructor(root: string) {
    this.root = root;
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
    const o = checkObject(options, ['create', 'mode']);
    const create = o.create ?? true;
    const mode = o.mode ?? 0o700;
    if (typeof create !== 'boolean') throw new TypeError(`Expected \`create\` to be a boolean, got ${show(create)}`);
    if (typeof mode !== 'number' || !Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
      throw new TypeError(`Expected \`mode\` to be an integer from 0 to 0o7777, got ${show(mode)}`);
    }
    let made = false;
    if (create) {
      try {
        made = (await mkdir(abs, { recursive: true, mode })) !== undefined;
      } catch (err) {
        if (errnoOf(err) !== 'EEXIST') throw err; // a file there: ENOTDIR below
      }
    }
    // stat, not lstat: a root that is a symlink to a directory (a store moved
    // to another disk) is that directory; we keep its real path, so checks
    // that compare paths with the root (commit's dest) see through the link.
    const st = await stat(abs);
    if (!st.isDirectory()) throw osError('ENOTDIR', 'opendir', abs, 'not a directory');
    const real = await realpath(abs);
    // The marker goes only into a root we created or that is still empty:
    // opening a mistyped, populated directory must not make it sweepable.
    if (create && (made || (await isEmpty(real)))) await writeMarker(real);
    return new StagingArea(real);
    return new StagingArea(abs);
  }

  /**
   * Creates a new entry: its lock file, already locked, then its staging
   * directory.
   *
   * @remarks The directory never exists without its lock being held (see the
   * protocol comment). A failure leaves nothing behind.
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
      const lock = await createAndLock(this.root, LOCK_PREFIX);
      const id = lock.name.slice(LOCK_PREFIX.length);
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
    const dir = await opendir(this.root, { bufferSize: 64 });
    for await (const d of dir) {
      signal?.throwIfAborted();
      const k = classify(d.name);
      if (k.kind !== 'lock' && k.kind !== 'dir') continue;
      const path = join(this.root, k.id);
      const lockPath = join(this.root, LOCK_PREFIX + k.id);
      if (k.kind === 'dir') {
        if (!lstatQuiet(path)) continue;
        if (lstatQuiet(lockPath)) continue; // listed by its lock file
        yield { id: k.id, path, lockPath, hasDir: true, state: 'missing', owner: null };
        continue;
      }
      const probe = await probeLock(lockPath);
      if (probe.state === 'missing') continue;
      const hasDir = lstatQuiet(path) !== undefined;
      const entry: StagingEntry = { id: k.id, path, lockPath, hasDir, state: probe.state, owner: probe.owner };
      if (probe.error) entry.error = probe.error;
      yield entry;
    }
  }

  /**
   * Reclaims every entry whose lock is free: deletes its staging directory,
   * then its lock file. Live entries are left alone.
   *
   * @remarks Streams the root with `opendir`, one entry at a time, so memory
   * stays bounded for any number of entries; the system calls run
   * synchronously in slices of a few milliseconds, yielding to the event
   * loop in between, and never occupy libuv's threadpool. Never deletes a
   * live entry (held by another process, by this process, or by a classic
   * POSIX `fcntl` holder), never follows a symlink, never enters another
   * filesystem, never deletes outside the root; see the protocol comment.
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
    const o = checkObject(options, ['dryRun', 'onProgress', 'signal']);
    const dryRun = o.dryRun ?? false;
    if (typeof dryRun !== 'boolean') throw new TypeError(`Expected \`dryRun\` to be a boolean, got ${show(dryRun)}`);
    const onProgress = o.onProgress;
    if (onProgress !== undefined && typeof onProgress !== 'function') {
      throw new TypeError(`Expected \`onProgress\` to be a function, got ${show(onProgress)}`);
    }
    const signal = checkSignal(o.signal);
    signal?.throwIfAborted();

    const dev = (await lstat(this.root)).dev;
    const report: RecoverReport = { scanned: 0, removed: 0, live: 0, bytesFreed: 0, errors: [] };
    const slicer = new Slicer();
    const dir = await opendir(this.root, { bufferSize: 128 });
    // for-await closes the directory when the loop ends, breaks or throws.
    for await (const d of dir) {
      if (signal?.aborted) break;
      let outcome: Outcome;
      try {
        outcome = await this.#sweepName(d.name, dev, dryRun, slicer);
      } catch (err) {
        outcome = { kind: 'error', path: join(this.root, d.name), error: asError(err) };
      }
      await slicer.tick();
      if (outcome.kind === 'skip') continue;
      report.scanned++;
      if (outcome.kind === 'live') report.live++;
      else if (outcome.kind === 'removed') {
        report.removed++;
        report.bytesFreed += outcome.bytes;
      } else report.errors.push({ path: outcome.path, error: outcome.error });
      (onProgress as ((p: RecoverProgress) => void) | undefined)?.({
        scanned: report.scanned,
        removed: report.removed,
        live: report.live,
        bytesFreed: report.bytesFreed,
        errors: report.errors.length,
      });
    }
    signal?.throwIfAborted();
    return report;
  }

  /** Handles one name of the root. Rejects only for unexpected errors (recorded by the caller). */
  async #sweepName(name: string, dev: number, dryRun: boolean, slicer: Slicer): Promise<Outcome> {
    const k = classify(name);
    if (k.kind === 'ignore') return skip;
    if (k.kind === 'hidden') {
      // In-flight lock files (being published, probed or taken) are not
      // entries: a free one is deleted, and none is counted.
      if (!dryRun) await this.#reclaimHidden(join(this.root, name));
      return skip;
    }
    const path = join(this.root, k.id);
    const lockPath = join(this.root, LOCK_PREFIX + k.id);
    // A directory with its lock file: the lock file's own entry decides. (One
    // without is checked again once its lock is held: it may have finished.)
    if (k.kind === 'dir' && lstatQuiet(lockPath)) return skip;
    if (dryRun) return this.#wouldReclaim(lockPath, path, dev, slicer);
    return k.kind === 'lock' ? this.#reclaim(lockPath, path, dev, slicer) : this.#reclaimOrphan(lockPath, path, dev, slicer);
  }

  /**
   * Takes the existing lock file `lockPath` without ever creating a file at
   * that path (`create: false`): if its owner deletes it in that instant,
   * the open or the inode check fails with ENOENT and the sweep creates
   * nothing, so it never mistakes an entry that just finished for an
   * abandoned one (inode numbers are reused at once).
   *
   * @returns the held lock, `'live'` when it is held, `'gone'` when the
   * entry finished meanwhile (or was never there)
   */
  async #take(lockPath: string): Promise<FileLock | 'live' | 'gone'> {
    try {
      return await tryLock(lockPath, { backend: 'kernel', create: false });
    } catch (err) {
      if (isLockError(err, 'ELOCKED')) return 'live';
      if (errnoOf(err) === 'ENOENT') return 'gone';
      throw err;
    }
  }

  /** Reclaims the entry of an existing lock file: `lock-<id>` free means its writer is gone. */
  async #reclaim(lockPath: string, path: string, dev: number, slicer: Slicer): Promise<Outcome> {
    let lock: FileLock | 'live' | 'gone';
    try {
      lock = await this.#take(lockPath);
    } catch (err) {
      return { kind: 'error', path: lockPath, error: asError(err) };
    }
    if (lock === 'live') return live;
    if (lock === 'gone') return skip;
    let outcome: Outcome;
    try {
      const bytes = await removeTree(path, dev, slicer);
      // We hold the inode, which was at `lockPath` when we locked it; only a
      // holder deletes a lock file, so the name is still ours.
      unlinkSync(lockPath);
      outcome = { kind: 'removed', bytes };
    } catch (err) {
      // The lock file stays (unlocked): the entry is still stale, a later sweep retries.
      outcome = { kind: 'error', path, error: asError(err) };
    }
    return releasing(lock, outcome, lockPath);
  }

  /**
   * Reclaims a directory that has no lock file: we publish one, locked,
   * so concurrent sweeps exclude each other. A live entry always has its
   * lock file (created before the directory, deleted after it is gone), so
   * this is garbage, unless the directory is gone by the time we hold it.
   */
  async #reclaimOrphan(lockPath: string, path: string, dev: number, slicer: Slicer): Promise<Outcome> {
    let lock: FileLock;
    try {
      // Published already locked (never a create-then-lock gap in which
      // another sweep could take our new lock file for an abandoned entry).
      lock = await createLocked(this.root, () => basename(lockPath), { attempts: 1 });
    } catch (err) {
      // EEXIST: the lock file appeared meanwhile; its own entry decides.
      if (errnoOf(err) === 'EEXIST') return skip;
      return { kind: 'error', path: lockPath, error: asError(err) };
    }
    let outcome: Outcome;
    try {
      outcome = lstatQuiet(path) ? { kind: 'removed', bytes: await removeTree(path, dev, slicer) } : skip;
    } catch (err) {
      outcome = { kind: 'error', path, error: asError(err) };
    }
    return releasing(lock, outcome, lockPath);
  }

  /** Deletes a stray hidden lock file if nobody holds it. Errors are ignored: it is not an entry. */
  async #reclaimHidden(path: string): Promise<void> {
    try {
      const lock = await tryLock(path, { backend: 'kernel', create: false, removeOnRelease: true });
      await lock.release();
    } catch {
      // held (being published or taken), or gone: not ours to report
    }
  }

  /** The dry-run version of `#reclaim`: a probe that creates and deletes nothing. */
  async #wouldReclaim(lockPath: string, path: string, dev: number, slicer: Slicer): Promise<Outcome> {
    const probe = await probeLock(lockPath, false);
    if (probe.state === 'held') return live;
    if (probe.state === 'unknown') return { kind: 'error', path: lockPath, error: probe.error ?? new Error(`cannot tell whether '${lockPath}' is held`) };
    // free, or missing: an orphan directory (a live one always has its lock).
    if (probe.state === 'missing' && !lstatQuiet(path)) return skip;
    try {
      return { kind: 'removed', bytes: await removeTree(path, dev, slicer, true) };
    } catch (err) {
      return { kind: 'error', path, error: asError(err) };
    }
  }
}
