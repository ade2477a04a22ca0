/**
 * The other programs of the interop tests: containers/storage's own Go lock
 * code (test/fixtures/go/cshelper, built offline against Debian's
 * golang-github-containers-storage-dev), util-linux flock(1), python3; and
 * /proc/locks handshakes (a process is blocked waiting, or holds a lock),
 * never a sleep.
 */
import { execFile } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { start, type Child } from './child.js';

const run = promisify(execFile);

/**
 * Builds cshelper into `dir` (the test file's temp dir) and returns its path.
 * Offline: GOPATH is Debian's gocode tree, modules off; Go's own build cache
 * makes every build after the first take about a second.
 */
export async function buildCsHelper(dir: string): Promise<string> {
  const src = fileURLToPath(new URL('../fixtures/go/cshelper', import.meta.url));
  const out = join(dir, 'cshelper');
  await run('go', ['build', '-o', out, '.'], {
    cwd: src,
    env: {
      ...process.env,
      GO111MODULE: 'off',
      GOPATH: '/usr/share/gocode',
      GOFLAGS: '',
      // Go needs a build cache; a CI user without HOME gets one in the temp dir.
      ...(process.env.HOME || process.env.XDG_CACHE_HOME || process.env.GOCACHE
        ? {}
        : { GOCACHE: join(tmpdir(), 'xlock-go-build-cache') }),
    },
  });
  return out;
}

/** Starts `cshelper <args>` and waits for its first line. */
export async function goChild(helper: string, ...args: string[]): Promise<{ child: Child; first: string }> {
  const child = start(helper, args);
  return { child, first: await child.line() };
}

/** The /proc/locks lines (held and blocked) on `path`'s inode. */
export function procLocksOf(path: string): string[] {
  const st = statSync(path);
  return readFileSync('/proc/locks', 'utf8')
    .split('\n')
    .filter((l) => l.split(/\s+/).some((f) => f.endsWith(`:${st.ino}`)));
}

/**
 * Resolves once some process is blocked in the kernel waiting for a lock on
 * `path` (a `->` line for its inode in /proc/locks). Rejects after 20 s.
 */
export async function blockedWaiter(path: string): Promise<void> {
  const deadline = performance.now() + 20_000;
  while (performance.now() < deadline) {
    if (procLocksOf(path).some((l) => l.includes('->'))) return;
    await delay(5);
  }
  throw new Error(`no process started waiting for ${path}`);
}
