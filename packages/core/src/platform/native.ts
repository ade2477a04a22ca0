/**
 * The one place that loads the kernel-lock addon and knows the platform.
 * Nothing else in the package branches on `process.platform`.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** The addon's surface (see native/xlock.c); results are `-errno` on failure. */
export interface NativeAddon {
  readonly kind: 'ofd' | 'flock';
  open(path: string, flags: number, mode: number): number;
  setlk(fd: number, type: LockType): number;
  getlk(fd: number, type: LockType): number;
  verify(fd: number, path: string, record?: Buffer): number;
  unlinkHeld(fd: number, path: string): number;
  close(fd: number): number;
  renameNoReplace(from: string, to: string): number;
  wait(fd: number, type: LockType, done: (result: number) => void): WaitHandle | number;
  cancel(handle: WaitHandle): void;
}

/** An opaque handle of a pending native wait. */
export type WaitHandle = object & { readonly __wait: unique symbol };

/** Lock types as the addon takes them. */
export const LockType = { Unlock: 0, Shared: 1, Exclusive: 2 } as const;
/** One of {@link LockType}'s values. */
export type LockType = (typeof LockType)[keyof typeof LockType];

const require = createRequire(import.meta.url);
// Relative to dist/platform/ (and src/platform/ when run from source).
const candidates = ['../../build/Release/xlock.node', '../../build/Debug/xlock.node'];

function load(): { addon: NativeAddon | null; reason?: string } {
  if (process.platform === 'win32') return { addon: null, reason: 'kernel locks are not implemented on Windows' };
  const failures: string[] = [];
  for (const rel of candidates) {
    const file = fileURLToPath(new URL(rel, import.meta.url));
    try {
      return { addon: require(file) as NativeAddon };
    } catch (err) {
      failures.push(`${file}: ${(err as NodeJS.ErrnoException).code ?? ''} ${(err as Error).message.split('\n')[0]}`);
    }
  }
  return {
    addon: null,
    reason: `the kernel-lock addon could not be loaded (run \`pnpm install\` to build it); tried:\n  ${failures.join('\n  ')}`,
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
 * false, `reason` says what was tried.
 *
 * @example
 * ```ts
 * if (!kernelLocks.available) console.warn(kernelLocks.reason);
 * ```
 */
export const kernelLocks: {
  readonly available: boolean;
  readonly kind: 'ofd' | 'flock' | null;
  readonly reason?: string;
} = Object.freeze(addon ? { available: true, kind: addon.kind } : { available: false, kind: null, reason: loaded.reason });
