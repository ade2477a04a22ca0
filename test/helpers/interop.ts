/**
 * The other programs of the interop tests: containers/storage's own Go lock
 * code (test/fixtures/go/cshelper, built offline against Debian's
 * golang-github-containers-storage-dev), and what /proc/locks says of a
 * file (blockedWaiter, the handshake for "it waits", lives in proclocks.ts).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll } from 'vitest';
import { start, type Child } from './child.js';
import { tempDir, type TempDir } from './tmp.js';
import { haveTools } from './tools.js';

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

/**
 * For a test file (or describe block) using cshelper: whether Go and
 * Debian's containers/storage sources are here (a missing `go` fails in CI,
 * see tools.ts), and hooks that build it into a temp dir before the tests
 * and remove it after. `path` is set once the build is done.
 */
export function useCsHelper(): { readonly enabled: boolean; path: string } {
  const cs = {
    enabled: haveTools('go') && existsSync('/usr/share/gocode/src/github.com/containers/storage/pkg/lockfile'),
    path: '',
  };
  let dir: TempDir | undefined;
  beforeAll(async () => {
    if (!cs.enabled) return;
    dir = await tempDir();
    cs.path = await buildCsHelper(dir.path);
  });
  afterAll(() => dir?.[Symbol.asyncDispose]());
  return cs;
}

/** Starts `cshelper <args>` and waits for its first line. */
export async function goChild(helper: string, ...args: string[]): Promise<{ child: Child; first: string }> {
  const child = start(helper, args);
  return { child, first: await child.line() };
}

export { blockedWaiter } from './proclocks.js';
