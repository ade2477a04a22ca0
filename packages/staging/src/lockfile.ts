/**
 * Staging lock files: containers/storage's `staging_lockfile`, without its races.
 *
 * The protocol, once:
 *
 *   A staging lock file is an ordinary file in a shared directory whose
 *   *kernel lock* (an open-file-description lock on Linux, which conflicts
 *   with the classic POSIX `fcntl` locks of podman/buildah and Python's
 *   `fcntl.lockf`) says "someone is using this entry". The file's existence
 *   means nothing by itself: a crashed owner leaves the file, but the kernel
 *   dropped its lock the instant the process died, so anyone may then take
 *   it and delete it.
 *
 *   Create (`createAndLock(dir, pattern)`): the file is created unnamed
 *   (`O_TMPFILE`, mode 0o600), locked, given its owner record, and only then
 *   linked under its final name, which never replaces anything. Where the
 *   filesystem has no `O_TMPFILE` (NFS, most FUSE filesystems) it is created
 *   with `O_EXCL` under a hidden name (`.xlock-*.tmp`), locked, checked, given
 *   its record, then renamed without replacing. Either way a sweeper that
 *   try-locks every entry of `dir` can never lock it between its creation
 *   and our lock (the publication gap of containers/storage, podman#29641).
 *   Name collisions retry with a new name.
 *
 *   Take (`tryLockPath(path)`): open (creating when missing), lock without
 *   waiting, then check that the locked inode is still the one at `path` and
 *   still linked. A contender that opened the file just before its holder
 *   deleted it would otherwise "hold" a dead inode while a newcomer locks a
 *   fresh file at the same path (the unlinked-inode race); it retries instead.
 *
 *   Delete (`unlockAndDelete()`): unlink while still holding the lock (only
 *   if the path is still our inode), then close, which unlocks. Whoever
 *   takes the path afterwards gets a new file.
 *
 *   Example, a staging root shared with a sweeper:
 *
 *     /var/lib/store/tmp/
 *       .xlock-1a2b-0.tmp     being created without O_TMPFILE (locked; sweepers skip it)
 *       lock-4f9c2e…          locked by a live writer: left alone
 *       lock-77d01a…          unlocked (its writer was SIGKILLed): reclaimable
 */
import { createLocked, type FileLock, LockError, tryLock } from '@x/core';
import { basename } from 'node:path';

/** A held staging lock file. */
export interface StagingLockFile {
  /** Absolute path of the lock file. */
  readonly path: string;
  /** Its basename. */
  readonly name: string;
  /**
   * Deletes the file while still holding it, then unlocks. The handle is dead
   * afterwards: a second call rejects `ERELEASED`. The unlock happens even if
   * the delete fails (the delete's error is then reported).
   */
  unlockAndDelete(): Promise<void>;
  /** Same as `unlockAndDelete()`, but idempotent. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** Options of {@link createAndLock} and {@link tryLockPath}. */
export interface StagingLockOptions {
  /** Permission bits of a file we create (the umask applies). @defaultValue `0o600` */
  mode?: number | undefined;
}

class StagingLock implements StagingLockFile {
  readonly path: string;
  readonly name: string;
  #lock: FileLock | null;

  constructor(lock: FileLock) {
    this.#lock = lock;
    this.path = lock.path;
    this.name = basename(lock.path);
  }

  unlockAndDelete(): Promise<void> {
    const lock = this.#lock;
    if (!lock) return Promise.reject(new LockError('ERELEASED', this.path, `'${this.path}' was already unlocked and deleted`));
    this.#lock = null;
    return lock.release();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#lock) await this.unlockAndDelete();
  }
}

function checkMode(options: StagingLockOptions | undefined): number {
  if (options === undefined) return 0o600;
  if (typeof options !== 'object' || options === null)
    throw new TypeError(`Expected \`options\` to be an object, got \`${String(options)}\` (${typeof options})`);
  for (const key of Object.keys(options)) if (key !== 'mode') throw new TypeError(`Unknown option \`${key}\` (known: mode)`);
  return options.mode ?? 0o600;
}

/** A random part for mkstemp-style names: 64 bits, base 36. */
function randomPart(): string {
  // Math.random (seeded from the OS per isolate) instead of randomBytes,
  // which costs OpenSSL a getpid(2) per call: names need to be unlikely to
  // collide, not secret (a taken name is retried; see createLocked). Same
  // format as before: a 64-bit number in base 36 (naming.ts).
  const hi = BigInt((Math.random() * 0x100000000) >>> 0);
  const lo = BigInt((Math.random() * 0x100000000) >>> 0);
  return ((hi << 32n) | lo).toString(36);
}

/**
 * Creates a new staging lock file in `dir` and locks it (containers/storage
 * `CreateAndLock`), with no moment at which another process could lock it.
 *
 * @remarks The name comes from `pattern` mkstemp-style: the last `*` is
 * replaced by a random part, or the random part is appended. The file is
 * created new (mode `0o600`), locked with the kernel backend and holds an
 * owner record before it appears under that name (see the protocol above). Collisions and lock races retry with fresh names, up to 1000
 * times; `ENOENT`, `EACCES`, `ENOTDIR`, `ENOLCK` fail at once, and a failed
 * attempt leaves no file behind.
 *
 * @param dir - an existing directory
 * @param pattern - the name pattern, e.g. `'lock-'` or `'layer-*.lock'`; no `/` or NUL
 * @param options - `mode`
 * @returns the held lock file (`path` absolute, `name` its basename)
 * @throws `TypeError` for a bad `dir`, `pattern` or option; OS errors with
 * `code` and `path`; `LockError` `ENOTSUP` when kernel locks are unavailable.
 *
 * @example
 * ```ts
 * const entry = await createAndLock('/var/lib/store/tmp', 'lock-');
 * try {
 *   await fillStagingDir(entry.name);
 * } finally {
 *   await entry.unlockAndDelete();
 * }
 * ```
 */
export async function createAndLock(dir: string, pattern: string, options?: StagingLockOptions): Promise<StagingLockFile> {
  if (typeof pattern !== 'string' || pattern.includes('/') || pattern.includes('\\') || pattern.includes('\0')) {
    throw new TypeError(
      `Expected \`pattern\` to be a string without path separators or NUL, got \`${String(pattern)}\` (${typeof pattern})`,
    );
  }
  const mode = checkMode(options);
  const star = pattern.lastIndexOf('*');
  const prefix = star < 0 ? pattern : pattern.slice(0, star);
  const suffix = star < 0 ? '' : pattern.slice(star + 1);
  const lock = await createLocked(dir, () => `${prefix}${randomPart()}${suffix}`, { mode, removeOnRelease: true });
  return new StagingLock(lock);
}

/**
 * Locks the file at `path` without waiting, creating it when missing
 * (containers/storage `TryLockPath`).
 *
 * @remarks After locking, the locked inode is checked against the one at
 * `path`; a file deleted or replaced in between is retried, so the lock is
 * never on a dead inode.
 *
 * @param path - the lock file; its directory must exist
 * @param options - `mode` for a file we create
 * @returns the held lock file
 * @throws `LockError` `ELOCKED` when another process, or this one, holds it
 * (`owner` filled in when known); OS errors with `code` and `path`;
 * `TypeError` for bad arguments.
 *
 * @example
 * ```ts
 * try {
 *   const stale = await tryLockPath('/var/lib/store/tmp/lock-4f9c2e');
 *   await rm('/var/lib/store/tmp/4f9c2e', { recursive: true, force: true });
 *   await stale.unlockAndDelete();
 * } catch (err) {
 *   if (!isLockError(err, 'ELOCKED')) throw err; // in use: leave it
 * }
 * ```
 */
export async function tryLockPath(path: string, options?: StagingLockOptions): Promise<StagingLockFile> {
  const mode = checkMode(options);
  const lock = await tryLock(path, { backend: 'kernel', mode, removeOnRelease: true });
  return new StagingLock(lock);
}
