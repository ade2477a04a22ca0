/**
 * A staging entry: the held directory `create()` returns, with `stage`,
 * `commit` and `cleanup`. Protocol: docs/staging-protocol.md.
 */
import { LockError } from '@x/core';
import { lstat, rename, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { StagingLockFile } from './lockfile.js';
import {
  checkPath,
  errnoOf,
  fenceOf,
  fsyncPath,
  lstatOrNull,
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
   * protocol in docs/staging-protocol.md for the one window a plain `rename` leaves). Before the
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
    if (name === '' || name === '.' || name === '..')
      throw new TypeError(`Expected \`path\` to name a file or directory, got ${show(path)}`);
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
    if (typeof syncContents !== 'boolean')
      throw new TypeError(`Expected \`syncContents\` to be a boolean, got ${show(syncContents)}`);
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
