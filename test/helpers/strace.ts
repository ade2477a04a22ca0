/**
 * Running a child Node script under strace, for the tests that count system
 * calls or see which thread made them (they skip without strace: haveTools).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from './consumer.js';

/**
 * Runs the ES module `script` (with `args` as process.argv[1...]) in a child
 * Node, in the repository (to find @x/*), under `strace -f` tracing `calls`
 * (`trace=` list); with `paths`, descriptors are shown with their paths
 * (`-y`). Returns the log's lines (each starts with the thread id) and the
 * child's stdout; throws, with its stderr, unless it exited 0.
 */
export function straceNode(
  calls: string,
  script: string,
  args: string[],
  { paths = false, env }: { paths?: boolean; env?: NodeJS.ProcessEnv } = {},
): { lines: string[]; stdout: string } {
  const dir = mkdtempSync(join(tmpdir(), 'xlock-strace-'));
  try {
    const log = join(dir, 'strace.log');
    const r = spawnSync(
      'strace',
      [
        '-f',
        '-qq',
        ...(paths ? ['-y'] : []),
        '-e',
        `trace=${calls}`,
        '-o',
        log,
        process.execPath,
        '--input-type=module',
        '-e',
        script,
        ...args,
      ],
      { encoding: 'utf8', timeout: 60_000, cwd: repoRoot, env: env ?? process.env },
    );
    if (r.status !== 0) throw new Error(`strace'd child exited ${r.status ?? r.signal}: ${r.stderr}`);
    return { lines: readFileSync(log, 'utf8').split('\n'), stdout: r.stdout };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
