/**
 * Timeouts and aborts (issue 12, item 11): `timeout` (ms) rejects a
 * `LockError` `ETIMEDOUT`; an aborted `signal` rejects with `signal.reason`
 * itself (the web platform's rule); a timeout beyond what `setTimeout` can
 * hold (2^31-1 ms, about 24.8 days) is a long wait, not an instant
 * `ETIMEDOUT`. Handshake: the kernel lists our waiter as blocked.
 */
import { isLockError, lock } from '@x/core';
import { join } from 'node:path';
import { afterEach, expect, test } from 'vitest';
import { holder, reapAll, start } from './helpers/child.js';
import { rejectionOf } from './helpers/core-util.js';
import { blockedWaiter } from './helpers/proclocks.js';
import { tempDir } from './helpers/tmp.js';

afterEach(reapAll);

async function heldElsewhere(p: string) {
  const h = await holder('tryLock', p);
  expect(h.first).toMatch(/^acquired /);
  return h.child;
}

test('a timeout beyond 2^31-1 ms waits (it used to reject ETIMEDOUT after 1 ms)', async () => {
  await using d = await tempDir();
  const p = join(d.path, 'a.lock');
  const other = await heldElsewhere(p);
  // In a plain Node process (the test runner's timers are not Node's own):
  // waits with a 24.9-day timeout, aborts at stdin EOF, prints the outcome.
  const script = `
    import { lock } from '@x/core';
    const ac = new AbortController();
    process.stdin.on('end', () => ac.abort(new Error('stop'))).resume();
    try {
      await lock(${JSON.stringify(p)}, { timeout: 2 ** 31 + 1000, signal: ac.signal });
      console.log('acquired');
    } catch (err) {
      console.log(err.message === 'stop' ? 'aborted' : \`rejected \${err.code}\`);
    }
    process.exit(0);`;
  const waiter = start(process.execPath, ['--no-warnings', '--input-type=module', '-e', script]);
  const early = waiter.line();
  const first = await Promise.race([early, blockedWaiter(p).then(() => 'blocked')]);
  expect(first).toBe('blocked');
  await waiter.finish();
  expect(await early).toBe('aborted');
  await other.finish();
});

test('timeout rejects ETIMEDOUT; an aborted signal rejects with its reason, not a LockError', async () => {
  await using d = await tempDir();
  const p = join(d.path, 'a.lock');
  const other = await heldElsewhere(p);
  const timedOut = await rejectionOf(lock(p, { timeout: 1 }));
  expect(isLockError(timedOut, 'ETIMEDOUT')).toBe(true);
  const reason = { why: 'shutting down' };
  const ac = new AbortController();
  const waiting = lock(p, { signal: ac.signal });
  await blockedWaiter(p);
  ac.abort(reason);
  expect(await rejectionOf(waiting)).toBe(reason);
  await other.finish();
});
