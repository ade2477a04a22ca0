/**
 * `xstage run` keeps the lock for as long as the command runs (issue 11
 * item 5): the command inherits the locked descriptor (fd 3), so a SIGKILL
 * of xstage leaves the lock held until the command ends, for the OFD and
 * the flock lock; the command may close fd 3 itself; `--close` does not
 * pass it. The command ends on a FIFO write, a handshake, never a sleep;
 * "the lock is free again" is a waiting lock() the kernel wakes.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, test } from 'vitest';
import { isProcessAlive, lock, readOwner, tryLock } from '@x/core';
import { reapAll, start } from './helpers/child.js';
import { exited, within } from './helpers/core-util.js';
import { tempDir } from './helpers/tmp.js';
import { haveTools } from './helpers/tools.js';

const BIN = fileURLToPath(new URL('../packages/staging/bin/xstage.js', import.meta.url));
const fixturePy = fileURLToPath(new URL('./fixtures/py_lockf.py', import.meta.url));
const commands = new Set<number>();

afterEach(async () => {
  for (const pid of commands) if (isProcessAlive(pid)) process.kill(pid, 'SIGKILL');
  commands.clear();
  await reapAll();
});

/**
 * `xstage run [opts] <lock> -- sh -c <script>`: the script prints `running
 * <pid> <XSTAGE_LOCK_FD>` and ends once a line is written to `fifo`.
 */
async function runUntilFifo(lockPath: string, fifo: string, opts: string[], before = '') {
  execFileSync('mkfifo', [fifo]);
  const script = `${before}echo "running $$ \${XSTAGE_LOCK_FD:-none}"; read x < "$1"`;
  const run = start(process.execPath, [BIN, 'run', ...opts, lockPath, '--', 'sh', '-c', script, 'sh', fifo]);
  const [word, pid, fd] = (await run.line()).split(' ');
  expect(word).toBe('running');
  commands.add(Number(pid));
  return { run, pid: Number(pid), fd: fd! };
}

const busyFor = async (p: string, backend: 'kernel' | 'flock') =>
  tryLock(p, { backend }).then(
    async (l) => (await l.release(), false),
    (e: unknown) => (e as { code?: string }).code === 'ELOCKED',
  );

describe('xstage run and a SIGKILL', () => {
  for (const [backend, opts] of [
    ['kernel', []],
    ['flock', ['--flock']],
  ] as const) {
    test(`${backend}: the lock outlives a SIGKILLed xstage until the command ends`, async () => {
      await using d = await tempDir();
      const p = join(d.path, 'job.lock');
      const fifo = join(d.path, 'end');
      const { run, pid, fd } = await runUntilFifo(p, fifo, [...opts]);
      expect(fd).toBe('3');
      run.proc.kill('SIGKILL');
      await exited(run.proc);
      expect(isProcessAlive(pid)).toBe(true);
      expect(await busyFor(p, backend)).toBe(true);
      // The recorded xstage is dead: status finds the command through its descriptor.
      expect(await readOwner(p)).toMatchObject({ held: true, pid, fdPids: [pid] });
      if (backend === 'kernel' && haveTools('python3')) {
        const py = spawnSync('python3', [fixturePy, p, 'try'], { encoding: 'utf8' });
        expect(py.stdout.trim()).toBe('busy'); // podman-style POSIX lockers are excluded too
      }
      const waiting = lock(p, { backend, timeout: 20_000 });
      writeFileSync(fifo, 'end\n'); // the command ends
      await (await within(waiting, 20_000, 'lock() after the command ended')).release();
    });
  }

  test('the command may close fd 3: then a SIGKILL of xstage frees the lock while the command runs', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'job.lock');
    const fifo = join(d.path, 'end');
    const { run, pid } = await runUntilFifo(p, fifo, [], 'exec 3>&-; ');
    expect(await busyFor(p, 'kernel')).toBe(true); // xstage still holds it
    run.proc.kill('SIGKILL');
    await exited(run.proc);
    expect(isProcessAlive(pid)).toBe(true);
    await (await tryLock(p)).release();
    writeFileSync(fifo, 'end\n');
  });

  test('--close: the command gets no descriptor, and the lock ends with xstage', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'job.lock');
    const fifo = join(d.path, 'end');
    const { run, pid, fd } = await runUntilFifo(p, fifo, ['--close']);
    expect(fd).toBe('none');
    expect(await busyFor(p, 'kernel')).toBe(true);
    run.proc.kill('SIGKILL');
    await exited(run.proc);
    expect(isProcessAlive(pid)).toBe(true);
    await (await tryLock(p)).release();
    writeFileSync(fifo, 'end\n');
  });

  test('--help documents the inheritance and the differences from flock(1)', async () => {
    const r = spawnSync(process.execPath, [BIN, 'run', '--help'], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/fd 3/);
    expect(r.stdout).toMatch(/SIGKILL/);
    expect(r.stdout).toMatch(/Differences from flock\(1\)/);
    expect(r.stdout).toMatch(/75/);
  });
});
