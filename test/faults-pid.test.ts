/**
 * A lock taken on behalf of another process given as a NUMBER (issue 12,
 * item 6; Julia's `mkpidlock(path, pid)`) is released when that process
 * exits: a real `sleep` process, a real SIGKILL, and the handshake is the
 * handle's `signal` aborting and another process then taking the lock.
 */
import { lock, tryLock } from '@x/core';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { holder, reapAll, start } from './helpers/child.js';
import { within } from './helpers/core-util.js';
import { tempDir } from './helpers/tmp.js';

afterEach(reapAll);

describe.each(['kernel', 'lease'] as const)('%s: pid given as a number', (backend) => {
  test('the lock is released when that process is SIGKILLed', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    const sleeper = start('sleep', ['1000']);
    const held = await lock(p, { backend, pid: sleeper.proc.pid! });
    const busy = await holder('tryLock', p, { backend });
    expect(busy.first).toBe('error ELOCKED');
    const released = once(held.signal, 'abort');
    sleeper.proc.kill('SIGKILL');
    await within(released, 10_000, 'the release after the SIGKILL');
    expect(held.held).toBe(false);
    const next = await holder('tryLock', p, { backend });
    expect(next.first).toMatch(/^acquired /);
    await next.child.finish();
  });

  test('released first by its holder, the watch ends and a later exit changes nothing', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    const sleeper = start('sleep', ['1000']);
    const held = await tryLock(p, { backend, pid: sleeper.proc.pid! });
    await held.release();
    const mine = await tryLock(p, { backend });
    sleeper.proc.kill('SIGKILL');
    await sleeper.reap();
    expect(mine.held).toBe(true);
    await mine.release();
  });

  test('the watch does not keep a process alive', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    const sleeper = start('sleep', ['1000']);
    const script = `
      import { tryLock } from '@x/core';
      await tryLock(${JSON.stringify(p)}, { backend: '${backend}', pid: ${sleeper.proc.pid} });
      console.log('locked');`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const [code] = (await within(once(child, 'exit'), 20_000, 'the child exiting')) as [number | null];
      expect(code).toBe(0);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    await sleeper.reap();
  });
});
