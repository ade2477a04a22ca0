/** Handshakes through the kernel's list of locks, /proc/locks: never a sleep. */
import { readFileSync, statSync } from 'node:fs';
import { setTimeout as delay } from 'node:timers/promises';

/**
 * Resolves once some process is blocked in the kernel waiting for a lock on
 * `path` (a `->` line for its inode in /proc/locks). Rejects after 20 s.
 */
export async function blockedWaiter(path: string): Promise<void> {
  const ino = statSync(path).ino;
  const deadline = performance.now() + 20_000;
  while (performance.now() < deadline) {
    const lines = readFileSync('/proc/locks', 'utf8').split('\n');
    if (lines.some((l) => l.includes('->') && l.split(/\s+/).some((f) => f.endsWith(`:${ino}`)))) return;
    await delay(5);
  }
  throw new Error(`no process started waiting for ${path} (inode ${ino})`);
}
