/**
 * Directory walks of the staging area: removal that never follows a symlink
 * and never enters another filesystem, size measurement (synchronous system
 * calls in time slices, see {@link Slicer}), and the fsyncs of a commit
 * (asynchronous: an fsync is slow). Every walk streams (`opendir`): memory
 * grows with the depth of a tree, never with the number of its entries.
 */
import { constants as fsc, lstatSync, opendirSync, readFileSync, rmdirSync, unlinkSync, type Dir, type Stats } from 'node:fs';
import { lstat, open, opendir } from 'node:fs/promises';
import { join } from 'node:path';

import { checkPath, makeDirs, show } from '@x/core/internal';

// One home for these (@x/core's internal entry point).
export { checkPath, makeDirs, show };

/** The errno code of `err`, if it has one. */
export function errnoOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** An OS-style error: `code`, `path`, `syscall`, the errno message shape. */
export function osError(code: string, syscall: string, path: string, detail: string, cause?: unknown): NodeJS.ErrnoException {
  const err: NodeJS.ErrnoException = new Error(
    `${code}: ${detail}, ${syscall} '${path}'`,
    cause === undefined ? undefined : { cause },
  );
  err.code = code;
  err.syscall = syscall;
  err.path = path;
  return err;
}

/**
 * Gives an OS error of a call that does not name a path (an fsync through a
 * file handle...) the path it concerns, in Node's message shape. Returns `err`.
 */
export function withPath(err: unknown, path: string): unknown {
  const e = err as NodeJS.ErrnoException | null;
  if (err instanceof Error && typeof e?.code === 'string' && e.path === undefined) {
    e.path = path;
    err.message = `${err.message} '${path}'`;
  }
  return err;
}

/** `lstat`, or `null` when nothing is at `path`. */
export async function lstatOrNull(path: string): Promise<Stats | null> {
  try {
    return await lstat(path);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return null;
    throw err;
  }
}

/** The error of a mount point met by a removal (never entered). */
export function mountPoint(path: string): NodeJS.ErrnoException {
  return osError(
    'EBUSY',
    'rmdir',
    path,
    'a directory of another filesystem (a mount point); recovery does not enter it, unmount it first',
  );
}

/**
 * Time slices for synchronous work: `tick()` yields to the event loop once
 * the current slice has run for `budgetMs`.
 *
 * Why sweeps make synchronous system calls: each is a few microseconds of
 * metadata work, while a threadpool hop costs tens of microseconds of the
 * main thread's time (measured ~35 us per `fs.promises.lstat` on a VM,
 * against ~8 us for `lstatSync`), so a sweep of 100k entries made of async
 * calls was 8x slower. In slices, the event loop still runs every few ms,
 * and a sweep never occupies libuv's threadpool (other fs work of the
 * process is not starved behind it).
 */
export class Slicer {
  readonly #budgetMs: number;
  #start = performance.now();

  constructor(budgetMs = 4) {
    this.#budgetMs = budgetMs;
  }

  /** Resolves at once, or after one turn of the event loop when the slice is used up. */
  async tick(): Promise<void> {
    if (this.due()) await this.yield();
  }

  /** Whether the slice is used up (a synchronous check: no promise per entry). */
  due(): boolean {
    return performance.now() - this.#start >= this.#budgetMs;
  }

  /** Milliseconds left in this slice (never below a tenth of it: native work always gets some). */
  remaining(): number {
    return Math.max(this.#budgetMs / 10, this.#budgetMs - (performance.now() - this.#start));
  }

  /** Lets one turn of the event loop run, then starts a new slice. */
  async yield(): Promise<void> {
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.#start = performance.now();
  }
}

/**
 * Whether a mount point listed in the fence is `path` or lies under it
 * (removing `path` would meet it). Usually there is none.
 */
export function meetsMount(fence: Fence, path: string): boolean {
  if (fence.mounts.size === 0) return false;
  const prefix = `${path}/`;
  for (const m of fence.mounts) if (m === path || m.startsWith(prefix)) return true;
  return false;
}

/** `lstatSync`, or `undefined` when nothing is at `path`. */
export function lstatQuiet(path: string): Stats | undefined {
  return lstatSync(path, { throwIfNoEntry: false });
}

function unlinkQuiet(path: string, bytes: number): number {
  try {
    unlinkSync(path);
    return bytes;
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return 0;
    throw err;
  }
}

/** Opens a directory stream, or `null` when it is gone. */
function openDir(path: string): Dir | null {
  try {
    return opendirSync(path, { bufferSize: 32 });
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return null;
    throw err;
  }
}

/**
 * Where a removal must stop: the device of the tree's filesystem, and the
 * mount points under the tree's root (a bind mount of a directory of the same
 * filesystem has the same device: only the mount table tells it apart).
 */
export interface Fence {
  readonly dev: number;
  readonly mounts: ReadonlySet<string>;
}

/** Undoes the octal escapes of /proc/self/mountinfo (`\040` for a space). */
const unescapeMount = (s: string): string => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));

/**
 * The {@link Fence} of removals under `root` (an absolute path without
 * symlinks): its device and the mount points below it, read once from
 * /proc/self/mountinfo (none where it cannot be read: the device check alone).
 */
export function fenceOf(root: string): Fence {
  const dev = lstatSync(root).dev;
  const mounts = new Set<string>();
  let table = '';
  try {
    table = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    // no /proc: the device check alone
  }
  const prefix = root.endsWith('/') ? root : `${root}/`;
  for (const line of table.split('\n')) {
    const at = line.split(' ')[4];
    if (at === undefined) continue;
    const point = unescapeMount(at);
    if (point.startsWith(prefix)) mounts.add(point);
  }
  return { dev, mounts };
}

/**
 * Removes `path` and everything under it; resolves the bytes freed (the
 * sizes of the regular files removed). With `dryRun`, removes nothing and
 * resolves what it would free. The one removal routine of the package: the
 * recovery sweep and `StagingDir.cleanup()` both use it.
 *
 * Walks with `lstat`: a symlink is unlinked, never followed. A directory of
 * another filesystem, or any mount point (see {@link Fence}: an overlay
 * `merged`, a tmpfs, a bind mount) is neither entered nor removed, because
 * its contents live outside the tree being removed: the rest of the tree is
 * removed, then the call rejects `EBUSY` naming the mount point (its parents
 * stay, since they are not empty). Missing entries are skipped (a concurrent
 * remover). Directories are streamed: memory grows with the depth, not the
 * width.
 */
export async function removeTree(path: string, fence: Fence, slicer: Slicer, dryRun = false): Promise<number> {
  const st = lstatQuiet(path);
  if (!st) return 0;
  if (!st.isDirectory()) {
    const bytes = st.isFile() ? st.size : 0;
    return dryRun ? bytes : unlinkQuiet(path, bytes);
  }
  if (st.dev !== fence.dev || fence.mounts.has(path)) throw mountPoint(path);
  const dir = openDir(path);
  if (!dir) return 0;
  let bytes = 0;
  let failed: unknown;
  try {
    // Deleting entries while the stream is open is fine (POSIX readdir): the
    // others are still returned exactly once.
    for (let entry = dir.readSync(); entry !== null; entry = dir.readSync()) {
      try {
        bytes += await removeTree(join(path, entry.name), fence, slicer, dryRun);
      } catch (err) {
        failed ??= err; // the rest of the tree still goes
      }
      await slicer.tick();
    }
  } finally {
    dir.closeSync();
  }
  if (failed !== undefined) throw failed;
  if (dryRun) return bytes;
  try {
    rmdirSync(path);
  } catch (err) {
    if (errnoOf(err) !== 'ENOENT') throw err;
  }
  return bytes;
}

/** fsync of one file or directory, opened without following a symlink. */
export async function fsyncPath(path: string, directory: boolean): Promise<void> {
  const flags = fsc.O_RDONLY | fsc.O_NONBLOCK | (directory ? fsc.O_DIRECTORY : fsc.O_NOFOLLOW);
  const handle = await open(path, flags);
  try {
    await handle.sync();
  } catch (err) {
    throw withPath(err, path);
  } finally {
    await handle.close();
  }
}

/**
 * fsyncs every regular file and directory under `path`, then `path` itself,
 * children before their parents. Symlinks, sockets, FIFOs and devices are
 * skipped (opening a FIFO could block; a symlink's target is not ours).
 */
export async function syncTree(path: string): Promise<void> {
  const dir = await opendir(path, { bufferSize: 32 });
  for await (const entry of dir) {
    const child = join(path, entry.name);
    let isDir = entry.isDirectory();
    let isFile = entry.isFile();
    if (!isDir && !isFile && !entry.isSymbolicLink()) {
      // DT_UNKNOWN on some filesystems: ask lstat.
      const st = await lstatOrNull(child);
      isDir = st?.isDirectory() ?? false;
      isFile = st?.isFile() ?? false;
    }
    if (isDir) await syncTree(child);
    else if (isFile) await fsyncPath(child, false);
  }
  await fsyncPath(path, true);
}

/** An unknown thrown value as an Error. */
export function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/** @throws TypeError unless `signal` is undefined or an AbortSignal. */
export function checkSignal(signal: unknown): AbortSignal | undefined {
  if (signal !== undefined && !(signal instanceof AbortSignal))
    throw new TypeError(`Expected \`signal\` to be an AbortSignal, got ${show(signal)}`);
  return signal;
}

/** @throws TypeError unless `options` is undefined or an object with only `known` keys. */
export function checkObject(options: unknown, known: readonly string[]): Record<string, unknown> {
  if (options === undefined) return {};
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new TypeError(`Expected \`options\` to be an object, got ${show(options)}`);
  }
  for (const key of Object.keys(options))
    if (!known.includes(key)) throw new TypeError(`Unknown option \`${key}\` (known: ${known.join(', ')})`);
  return options as Record<string, unknown>;
}
