// Two processes contend for one kernel lock: run `node examples/contend.mjs`.
import { lock, tryLock, isLockError } from '@x/core';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

if (process.argv[2] === 'child') {
  const held = await lock(process.argv[3]);
  console.log('acquired');
  process.stdin.resume().once('end', () => held.release());
} else {
  const dir = await mkdtemp(join(tmpdir(), 'contend-'));
  const path = join(dir, 'demo.lock');
  const child = spawn(process.execPath, [new URL(import.meta.url).pathname, 'child', path], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  await new Promise((r) => child.stdout.once('data', r));
  console.log(`child ${child.pid} holds ${path}`);
  try {
    await tryLock(path);
  } catch (err) {
    if (!isLockError(err, 'ELOCKED')) throw err;
    console.log(`tryLock: ELOCKED, owner pid ${err.owner?.pid}`);
  }
  const t0 = performance.now();
  const waiting = lock(path, { timeout: 5000 });
  setTimeout(() => child.stdin.end(), 100);
  const held = await waiting;
  console.log(`lock(): got it ${(performance.now() - t0).toFixed(1)} ms after asking (child released at ~100 ms)`);
  await held.release();
  await new Promise((r) => child.once('exit', r));
  await rm(dir, { recursive: true });
}
