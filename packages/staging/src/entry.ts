/**
 * A staging entry: the held directory `create()` returns, with `stage`,
 * `commit` and `cleanup`. Protocol: docs/staging-protocol.md.
 */
import { LockError } from '@x/core';
import { lstat, rename, stat } from 'node:fs/promises';
import { moveInto } from './internal/move.js';
import { basename, dirname, join, resolve } from 'node:path';
import type { Claim } from './ownership.js';
import {
  checkObject,
  checkPath,
  errnoOf,
  fenceOf,
  fsyncPath,
  lstatOrNull,
  makeDirs,
  osError,
  removeTree,
  show,
  Slicer,
  syncTree,
} from './internal/fsutil.js';

/** Options of {@link StagingDir.commit}. */
export interface CommitOptions {
  /**
   * fsync every regular file and directory of the staging directory before
   * the rename. Turn it off only when the contents were already made durable.
   * The parent of `dest` and the root are fsynced after the rename either way.
   * @defaultValue `true`
   */
  syncContents?: boolean | undefined;
  /**
   * What an existing `dest` means. `'error'`: the commit rejects `EEXIST`
   * and nothing is moved (the entry stays held). `'keep'`: the normal
   * "already there" case of a build cache: `dest` is left as it is, the
   * staged copy is discarded (as by `cleanup()`), and the commit resolves
   * `'existed'`.
   * @defaultValue `'error'`
   */
  ifExists?: 'error' | 'keep' | undefined;
  /**
   * Create `dest`'s missing parent directories (`mkdir -p`, one level at a
   * time: a failure names the level and its real cause), fsynced with the
   * rest of the commit. @defaultValue `false`
   */
  parents?: boolean | undefined;
}

/**
 * What a commit did: `'committed'` (the staging directory is `dest` now), or
 * `'existed'` (`ifExists: 'keep'` and `dest` was already there: it is left as
 * it was, and the staged copy was discarded).
 */
export type CommitResult = 'committed' | 'existed';

/** A held staging directory. Created by {@link StagingArea.create}. */
export interface StagingDir {
  /** The entry's id. */
  readonly id: string;
  /** Absolute path of the staging directory, `<root>/<id>`. Write into it freely. */
  readonly path: string;
  /** Absolute path of its lock file, `<root>/lock-<id>`. */
  readonly lockPath: string;
  /**
   * Moves an existing file or directory into the staging directory, as
   * `<n>-<basename>` (`n` counts from 0 per entry), the way `mv` does.
   *
   * @remarks On the root's filesystem this is one `rename`. From another
   * filesystem (a tmpfs `/tmp`), it is copied to a hidden temporary name
   * inside the staging directory, fsynced, renamed to its final name, and
   * only then is the source removed: a crash or a failed copy (a full disk)
   * leaves the source intact and never a half-copied file under its final
   * name. The copy keeps permission bits, timestamps and (as root)
   * ownership, copies symlinks as symlinks, and refuses a mount point inside
   * the source (`EBUSY`) and sockets, FIFOs and devices (`ENOTSUP`).
   *
   * @param path - what to move
   * @returns the new path inside the staging directory
   * @throws `LockError` `ERELEASED` after commit or cleanup (or while they
   * run); OS errors with `code` and `path`: of `rename` (`ENOENT`...), of the
   * copy (`ENOSPC`, `EBUSY`, `ENOTSUP`: the source is intact), `EACCES` when
   * the source's directory does not let us remove it (checked before
   * copying), of removing the source (the copy is in place by then);
   * `TypeError` for a bad `path`.
   */
  stage(path: string): Promise<string>;
  /**
   * Makes the staging directory itself `dest` by `rename`, durably, then
   * deletes the lock. The handle is dead afterwards.
   *
   * @remarks `dest` must not exist: `EEXIST`, and nothing is moved (see the
   * protocol in docs/staging-protocol.md for the one window a plain `rename` leaves). Before the
   * rename the tree is fsynced (unless `syncContents: false`); after it,
   * `dest`'s parent and the root. A failed commit leaves the entry intact and
   * held, so it can be committed elsewhere or cleaned up. `dest` must be on
   * the root's filesystem (`EXDEV` otherwise) and not directly in the root
   * (the sweep would take it for an entry).
   *
   * With `ifExists: 'keep'`, an existing `dest` is not an error: the staged
   * copy is discarded and the commit resolves `'existed'`. With `parents:
   * true`, `dest`'s missing parents are created first.
   *
   * @param dest - the final path
   * @param options - `syncContents`, `ifExists`, `parents`
   * @returns `'committed'`, or `'existed'` (see {@link CommitResult})
   * @throws `EEXIST` (OS-style, `code` and `path`) when `dest` exists (unless
   * `ifExists: 'keep'`); `LockError` `ERELEASED` after commit or cleanup;
   * other OS errors (`ENOENT` for a missing parent without `parents`,
   * `EROFS`, `ENOSPC`, `EACCES` with the path that failed); `TypeError` for
   * a bad `dest` or option, or a `dest` directly inside the root.
   *
   * @example
   * ```ts
   * const outcome = await dir.commit(join(cache, digest), { ifExists: 'keep', parents: true });
   * if (outcome === 'existed') console.log('already cached');
   * ```
   */
  commit(dest: string, options?: CommitOptions): Promise<CommitResult>;
  /**
   * Removes the staging directory and its contents, then deletes the lock.
   * Idempotent: later calls, and calls after `commit`, resolve at once.
   *
   * @remarks Removes like `recover()` does: a symlink is unlinked, never
   * followed, and a mount point inside the directory (another filesystem, a
   * bind mount) is never entered: everything else is removed, and the call
   * rejects `EBUSY` naming the mount point.
   *
   * @throws the OS error of the removal, `EBUSY` for a mount point (the lock
   * is deleted anyway: the leftovers are then stale and `recover()` reclaims
   * them once unmounted)
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
 * Renames `from` to `to` unless `to` exists (see docs/staging-protocol.md: the
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

export class Entry implements StagingDir {
  readonly id: string;
  readonly path: string;
  readonly lockPath: string;
  readonly #root: string;
  #lock: Claim | null;
  #counter = 0;
  #state: 'open' | 'busy' | 'dead' = 'open';
  #pending: Promise<void> = Promise.resolve();
  readonly #staging = new Set<Promise<unknown>>();

  constructor(root: string, id: string, lock: Claim) {
    this.#root = root;
    this.id = id;
    this.path = join(root, id);
    this.lockPath = lock.path;
    this.#lock = lock;
  }

  async stage(path: string): Promise<string> {
    checkPath(path, 'path');
    const name = basename(path);
    if (name === '' || name === '.' || name === '..')
      throw new TypeError(`Expected \`path\` to name a file or directory, got ${show(path)}`);
    if (this.#state !== 'open') throw released(this.path);
    const target = join(this.path, `${this.#counter++}-${name}`);
    const move = moveInto(path, target, this.path);
    this.#staging.add(move);
    try {
      await move;
    } finally {
      this.#staging.delete(move);
    }
    return target;
  }

  async commit(dest: string, options?: CommitOptions): Promise<CommitResult> {
    const target = resolve(checkPath(dest, 'dest'));
    const o = checkObject(options, ['syncContents', 'ifExists', 'parents']);
    const { syncContents = true, ifExists = 'error', parents = false } = o;
    if (typeof syncContents !== 'boolean')
      throw new TypeError(`Expected \`syncContents\` to be a boolean, got ${show(syncContents)}`);
    if (ifExists !== 'error' && ifExists !== 'keep')
      throw new TypeError(`Expected \`ifExists\` to be 'error' or 'keep', got ${show(ifExists)}`);
    if (typeof parents !== 'boolean') throw new TypeError(`Expected \`parents\` to be a boolean, got ${show(parents)}`);
    if (dirname(target) === this.#root || target === this.#root) {
      throw new TypeError(`Expected \`dest\` to be outside the staging root '${this.#root}', got ${show(dest)}`);
    }
    if (this.#state !== 'open') throw released(this.path);
    this.#state = 'busy';
    const run = this.#commit(target, syncContents, ifExists === 'keep', parents);
    this.#pending = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  async #commit(target: string, syncContents: boolean, keep: boolean, parents: boolean): Promise<CommitResult> {
    let moved = false;
    let existed = false;
    // With `parents`: the directories this commit creates, fsynced (in
    // their parents) after the rename like dest's parent.
    const created: string[] = [];
    try {
      await Promise.allSettled(this.#staging);
      if (parents) {
        for (let d = dirname(target); !(await lstatOrNull(d)); d = dirname(d)) created.push(d);
        if (created.length > 0) makeDirs(dirname(target), 0o777);
      }
      // The root under another name is the root: refuse it like the lexical check does.
      // stat, not lstat: a parent that is a symlink to the root is the root.
      const [parent, root] = await Promise.all([stat(dirname(target)).catch(() => null), lstat(this.#root)]);
      if (parent && parent.dev === root.dev && parent.ino === root.ino) {
        throw new TypeError(`Expected \`dest\` to be outside the staging root '${this.#root}', got ${show(target)}`);
      }
      if (keep && (await lstatOrNull(target))) existed = true;
      else {
        if (syncContents) await syncTree(this.path);
        // Ownership lost meanwhile (an etcd lease expired: another host may be
        // deleting this tree): never move it into place. A loss after this
        // check and before the rename stays possible; fencing tokens close it.
        this.#lock?.signal?.throwIfAborted();
        try {
          await renameNoReplace(this.path, target);
          moved = true;
        } catch (err) {
          if (!keep || errnoOf(err) !== 'EEXIST') throw err;
          existed = true; // created by someone else meanwhile
        }
      }
    } finally {
      if (!moved && !existed) this.#state = 'open';
    }
    if (existed) {
      // Already there: the staged copy is not needed. `#state` is still busy.
      await this.#cleanup();
      return 'existed';
    }
    // Committed: whatever happens now, the handle is dead.
    const lock = this.#lock!;
    this.#lock = null;
    this.#state = 'dead';
    let error: unknown;
    try {
      await fsyncPath(dirname(target), true);
      for (const d of created) await fsyncPath(dirname(d), true);
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
    return 'committed';
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
      // The sweep's removal routine: never follows a symlink, never enters a
      // mount point (EBUSY naming it, after removing the rest of the tree).
      await removeTree(this.path, fenceOf(this.#root), new Slicer());
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
