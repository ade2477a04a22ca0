/**
 * Watching the process a lock was taken on behalf of (`pid` given as a
 * number), so the lock is released when it exits, as Julia's
 * `mkpidlock(path, pid)` does. On Linux the addon's `watchPid`: a pidfd polled
 * on a dedicated thread (never libuv's threadpool), woken by the kernel the
 * moment the process exits, immune to pid reuse. Where that is not available
 * (no addon, a kernel before 5.3), a `kill(pid, 0)` probe every
 * {@link PROBE_MS} ms on an unref'd timer. Neither keeps the process alive.
 */
import { addon, type WatchHandle } from '../platform/native.js';
import { E } from './oserror.js';

/** The fallback probe's period. */
const PROBE_MS = 250;

/**
 * Calls `onExit` once when process `pid` exits (at once, asynchronously,
 * when it is already gone).
 * @returns a function that stops the watch (idempotent)
 */
export function watchPid(pid: number, onExit: () => void): () => void {
  let done = false;
  const fire = () => {
    if (done) return;
    done = true;
    onExit();
  };
  if (addon) {
    const handle = addon.watchPid(pid, (result) => {
      if (result === 0) fire();
    });
    if (typeof handle !== 'number') {
      return () => {
        done = true;
        addon!.unwatchPid(handle as WatchHandle);
      };
    }
    if (handle === E.ESRCH) {
      setImmediate(fire);
      return () => void (done = true);
    }
    // ENOSYS (or out of threads): probe instead.
  }
  const timer = setInterval(() => {
    try {
      process.kill(pid, 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') {
        clearInterval(timer);
        fire();
      }
    }
  }, PROBE_MS);
  timer.unref();
  return () => {
    done = true;
    clearInterval(timer);
  };
}
