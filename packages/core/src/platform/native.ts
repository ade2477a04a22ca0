/**
 * The one place that loads the kernel-lock addon and knows the platform.
 * Nothing else in the package branches on `process.platform`.
 *
 * Loading order (docs/installing.md):
 *   1. `XLOCK_ADDON`, when set: that `.node` file and nothing else;
 *   2. the prebuild shipped in the package for this platform, architecture
 *      and C library: `prebuilds/<platform>-<arch>/xlock.<libc>.node`;
 *   3. the development build, `build/xlock.node` (`pnpm build` in the
 *      workspace, or `node scripts/build-native.mjs` on purpose).
 * An addon from another version of the package (its `abi` differs from
 * {@link ADDON_ABI}: a stale build, an old `XLOCK_ADDON`) is refused like a
 * missing one. When none loads, `kernelLocks.reason` says why and what to do.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** The addon's surface (see native/xlock.h and the .c files beside it); results are `-errno` on failure. */
export interface NativeAddon {
  /** The interface version it was built with (XLOCK_ABI in native/xlock.h); must be {@link ADDON_ABI}. */
  readonly abi: number;
  readonly kind: 'ofd' | 'flock';
  open(path: string, flags: number, mode: number): number;
  setlk(fd: number, type: LockType): number;
  getlk(fd: number, type: LockType): number;
  verify(fd: number, path: string, record?: Buffer, ours?: number, same?: number): number;
  /**
   * take.c: open (`flags`, O_CLOEXEC added), lock without waiting, then
   * `verify()`: `(fd << 3) | status` with the descriptor open (status:
   * `verify()`'s 0..3, or 4 held elsewhere), or `-(errno + step * 0x10000)`
   * with nothing open (step 0 open, 1 fcntl, 2 the check's fstat/lstat).
   */
  take(path: string, flags: number, mode: number, type: LockType, record?: Buffer, ours?: number, same?: number): number;
  unlinkHeld(fd: number, path: string): number;
  close(fd: number): number;
  renameNoReplace(from: string, to: string): number;
  /**
   * Resolves 0 once held, or -errno (ETIMEDOUT after `timeoutMs` >= 0, ECANCELED after cancel).
   * With `path`, a granted lock is checked (and `record` written) on the wait's thread before
   * it resolves: then it resolves `verify()`'s result (0..3, held), or
   * `-(VERIFY_FAILED + errno)` when that check failed (held too).
   */
  wait(
    fd: number,
    type: LockType,
    timeoutMs: number,
    path?: string,
    record?: Buffer,
    ours?: number,
    same?: number,
  ): Promise<number>;
  cancel(fd: number): void;
  /** Asks idle wait threads to exit now; returns how many are still running. */
  trimWaitThreads(): number;
  /**
   * Tests only: a pause (ns) that widens a race's window; `which` (XL_GAP_* in native/xlock.h):
   * 0 before each blocking call of a wait (a cancel signal landing there is lost), 1 at the start
   * of the check after a wait's grant (cut short by a signal, it fails the check with EINTR, as a
   * filesystem may), 2 in leaseRelease between its check and its rename.
   */
  setWaitTestGap(ns: number, which?: 0 | 1 | 2): void;
  /**
   * Lease (lease.c): a new file holding `record` appears at `path` in one
   * step (O_TMPFILE in `dir`, then linkat). Its descriptor when `flags & 1`
   * (keep it), else 0; `flags & 2` links through /proc/self/fd (tests);
   * -EEXIST when `path` exists; -EOPNOTSUPP when it cannot be done this way
   * here (publish through a temporary file instead).
   */
  leasePublish(dir: string, path: string, record: string, mode: number, flags: number): number;
  /**
   * Lease (lease.c): moves the file at `path` to `aside` and deletes it,
   * only while it is the inode open on `fd`; closes `fd`. 0 released, 1 not
   * ours (nothing done), 2 taken over meanwhile (put back), or -errno.
   */
  leaseRelease(fd: number, path: string, aside: string): number;
  /**
   * createLocked (create.c): an unnamed file (`O_TMPFILE`) in `dir`, locked
   * exclusively, holding `record` (stamped at `same`), then linked at `path`
   * (never replacing): its descriptor, or -errno from the open,
   * `-(CREATE_LOCK + errno)` from the lock, `-(CREATE_LINK + errno)` from
   * the link (`EEXIST`: something is at `path`); -EOPNOTSUPP when it cannot
   * be done this way here (create under a hidden name instead). Nothing is
   * left on failure. `flags & 1` links through /proc/self/fd (tests).
   */
  createTmpfile(dir: string, path: string, record: Buffer, same: number, mode: number, flags: number): number;
  watchPid(pid: number, done: (result: number) => void): WatchHandle | number;
  unwatchPid(handle: WatchHandle): void;
  /** One staging entry's reclaim (native/sweep.c); absent from an addon older than it. */
  reclaim?(
    rootFd: number,
    lockName: string,
    dirNames: readonly string[],
    budgetUs: number,
    heldFd: number,
    out: Float64Array,
    errPath: Buffer,
  ): number;
  /** 1 when something is at `name` in the directory `rootFd`, 0 when not, -errno (native/sweep.c). */
  lookup?(rootFd: number, name: string): number;
  /**
   * The sweep's loop over the root: reads it (getdents64 into `buf`) and
   * settles the common names natively, returning for the others
   * (native/sweep.c, js_sweep, says how). A code; with flag 2 (background)
   * a promise of it.
   */
  sweep?(
    rootFd: number,
    budgetUs: number,
    flags: number,
    buf: Buffer,
    out: Float64Array,
    errPath: Buffer,
  ): number | Promise<number>;
}

/**
 * The addon interface this code needs: XLOCK_ABI in native/xlock.h, bumped
 * together whenever an export's arguments or results change.
 */
export const ADDON_ABI = 5;

/** How a wait given a path reports a failed check after the grant: `-(VERIFY_FAILED + errno)`. */
export const VERIFY_FAILED = 0x10000;

/** How createTmpfile reports a failed lock and a failed link: `-(CREATE_LOCK + errno)`, `-(CREATE_LINK + errno)`. */
export const CREATE_LOCK = 0x10000;
/** See {@link CREATE_LOCK}. */
export const CREATE_LINK = 0x20000;
/** How take reports which step failed: `-(errno + step * TAKE_STEP)`, step 0 open, 1 fcntl, 2 the check (take.c). */
export const TAKE_STEP = 0x10000;

/** An opaque handle of a process watch (pidfd). */
export type WatchHandle = object & { readonly __watch: unique symbol };

/** Lock types as the addon takes them; `| LockType.Flock` asks for flock(2) instead of OFD locks. */
export const LockType = { Unlock: 0, Shared: 1, Exclusive: 2, Flock: 4 } as const;
/** One of {@link LockType}'s values. */
export type LockType = (typeof LockType)[keyof typeof LockType];

const require = createRequire(import.meta.url);
// This file is dist/platform/native.js (src/platform/native.ts under vitest).
const packageDir = fileURLToPath(new URL('../../', import.meta.url));
const buildScript = `${packageDir}scripts/build-native.mjs`;

/**
 * Which C library this process runs on, read from what the process has
 * mapped (the dynamic loader and libc it really uses), so it is right in a
 * container, on Alpine, Void or a glibc distro with musl tools installed.
 * `undefined` for a static Node or no /proc: then both are tried.
 */
function detectLibc(): 'glibc' | 'musl' | undefined {
  let maps: string;
  try {
    maps = readFileSync('/proc/self/maps', 'latin1');
  } catch {
    return undefined;
  }
  if (/\/ld-musl-[^/\s]*\.so|\/libc\.musl-[^/\s]*\.so/.test(maps)) return 'musl';
  if (/\/libc\.so\.6|\/libc-2\.\d+\.so|\/ld-linux[^/\s]*\.so/.test(maps)) return 'glibc';
  return undefined;
}

function tryLoad(file: string): { addon?: NativeAddon; error?: string } {
  try {
    const addon = require(file) as NativeAddon;
    if (addon.abi === ADDON_ABI) return { addon };
    const abi = typeof addon.abi === 'number' ? addon.abi : 'none';
    return {
      error:
        `${file} is from another version of @x/core (addon ABI ${abi}, this version needs ${ADDON_ABI}), ` +
        `not loaded: rebuild it with \`node ${buildScript}\``,
    };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { error: `${code === 'MODULE_NOT_FOUND' ? 'not there' : (err as Error).message.split('\n')[0]}` };
  }
}

/** What was loaded, from where, or why nothing was. */
interface Loaded {
  addon: NativeAddon | null;
  file?: string | undefined;
  reason?: string | undefined;
}

function load(): Loaded {
  const override = process.env.XLOCK_ADDON;
  if (override) {
    const r = tryLoad(override);
    if (r.addon) return { addon: r.addon, file: override };
    return { addon: null, reason: `XLOCK_ADDON=${override} did not load (${r.error}); unset it to use @x/core's own addon.` };
  }
  if (process.platform === 'win32') {
    return { addon: null, reason: "kernel locks are not implemented on Windows yet; pass backend: 'lease' to lock files there." };
  }
  const libc = process.platform === 'linux' ? detectLibc() : undefined;
  const flavours = process.platform !== 'linux' ? ['node'] : libc ? [libc] : ['glibc', 'musl'];
  const target = `${process.platform}-${process.arch}`;
  const tried: string[] = [];
  for (const flavour of flavours) {
    const file = `${packageDir}prebuilds/${target}/xlock.${flavour}.node`;
    const r = tryLoad(file);
    if (r.addon) return { addon: r.addon, file };
    tried.push(`${file}: ${r.error}`);
  }
  const dev = `${packageDir}build/xlock.node`;
  const r = tryLoad(dev);
  if (r.addon) return { addon: r.addon, file: dev };
  tried.push(`${dev}: ${r.error}`);
  const what = `${target}${libc ? ` (${libc})` : ''}`;
  return {
    addon: null,
    reason:
      `@x/core has no kernel-lock addon that loads on ${what}: build one from its C source with ` +
      `\`node ${buildScript}\` (needs a C compiler), or set XLOCK_ADDON to an xlock.node built for this machine. ` +
      `Tried: ${tried.join('; ')}`,
  };
}

const loaded = load();

/** The addon, or null when it could not be loaded. */
export const addon: NativeAddon | null = loaded.addon;

/**
 * Whether kernel locks are available in this process, and of which kind.
 *
 * @remarks `'ofd'` (Linux open-file-description locks) conflicts with classic
 * POSIX `fcntl` locks, so it excludes podman/buildah and Python `fcntl.lockf`.
 * `'flock'` (macOS, BSD) does not interoperate with them. When `available` is
 * false, `reason` says why and what to do, and `backend: 'auto'` rejects
 * `ENOTSUP` with that text rather than switching to another kind of lock.
 * `file` is the addon that was loaded: the prebuild shipped for this
 * platform, the development build, or the file `XLOCK_ADDON` names.
 *
 * @example
 * ```ts
 * if (!kernelLocks.available) console.warn(kernelLocks.reason);
 * ```
 */
export const kernelLocks: {
  readonly available: boolean;
  readonly kind: 'ofd' | 'flock' | null;
  readonly file?: string | undefined;
  readonly reason?: string | undefined;
} = Object.freeze(
  addon
    ? { available: true, kind: addon.kind, ...(loaded.file ? { file: loaded.file } : {}) }
    : { available: false, kind: null, reason: loaded.reason },
);
