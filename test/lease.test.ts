import { afterEach, describe, expect, test } from 'vitest';
import { isLockError, isProcessAlive, lock, readOwner, tryLock, type FileLock } from '@x/core';
import { hooks } from '@x/core/testing';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { fixture, holder, reapAll, start } from './helpers/child.js';
import { tempDir } from './helpers/tmp.js';
import { takeoverBarrier } from './helpers/core-util.js';

afterEach(async () => {
  hooks.beforeTakeover = undefined;
  await reapAll();
});

/** A pid that is provably dead on this host: a child we ran and reaped. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', '0']);
  return r.pid!;
}

async function leaseHolder(path: string, options: object = {}) {
  const child = start(process.execPath, [fixture('lease-holder.mjs'), path, JSON.stringify(options)]);
  expect(await child.line()).toBe('acquired');
  return child;
}

/** A lease file whose recorded owner is a dead process of this host. */
async function staleLease(path: string): Promise<void> {
  const holder = await leaseHolder(path);
  holder.proc.kill('SIGKILL');
  await holder.reap();
  expect(existsSync(path)).toBe(true);
}

describe('lease backend', () => {
  test('a SIGKILLed holder on this host is taken over at once', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    await staleLease(p);
    const held = await tryLock(p, { backend: 'lease' });
    expect(held.backend).toBe('lease');
    expect((await readOwner(p))?.pid).toBe(process.pid);
    await held.release();
    expect(readdirSync(d.path)).toEqual([]);
  });

  test("readOwner's held: true while the lease holder lives, false once it is SIGKILLed", async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    const holder = await leaseHolder(p);
    expect(await readOwner(p)).toMatchObject({ backend: 'lease', pid: holder.proc.pid, held: true });
    holder.proc.kill('SIGKILL');
    await holder.reap();
    expect(await readOwner(p)).toMatchObject({ backend: 'lease', pid: holder.proc.pid, held: false });
  });

  test('a SIGKILLed holder that its parent never reaped (a zombie) is taken over at once', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    const parent = start('python3', [fixture('zombie-parent.py'), process.execPath, fixture('lease-holder.mjs'), p]);
    const line = await parent.line();
    expect(line).toMatch(/^zombie \d+$/);
    const pid = Number(line.split(' ')[1]);
    // isProcessAlive is kill(pid, 0) (docs/contract.md 3.2: only ESRCH is dead): a zombie answers. The lease needs proof and gets it.
    expect(isProcessAlive(pid)).toBe(true);
    expect((await readOwner(p))?.pid).toBe(pid);
    const held = await tryLock(p, { backend: 'lease' });
    expect((await readOwner(p))?.pid).toBe(process.pid);
    await held.release();
    parent.proc.stdin!.end();
    expect(await parent.finish()).toBe(0);
  });

  test('a live process whose main thread exited (it reads as a zombie) is not taken for dead', async () => {
    await using d = await tempDir();
    const bin = join(d.path, 'main-thread-exit');
    const cc = spawnSync('cc', ['-pthread', '-o', bin, fixture('main-thread-exit.c')], { encoding: 'utf8' });
    expect(cc.status, cc.stderr).toBe(0);
    const proc = start(bin, []);
    expect(await proc.line()).toBe('running');
    const p = join(d.path, 'a.lock');
    const held = await tryLock(p, { backend: 'lease', pid: proc.proc.pid! });
    const { child, first } = await holder('tryLock', p, { backend: 'lease' });
    expect(first).toBe('error ELOCKED');
    expect(await child.finish()).toBe(3);
    expect(held.held).toBe(true);
    await held.release();
    proc.proc.stdin!.end();
    expect(await proc.finish()).toBe(0);
  });

  test('a waiter gets the lease of a holder SIGKILLed while it waits well before its next poll', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    const holder = await leaseHolder(p);
    const napping = new Promise<void>((resolve) => (hooks.leaseNap = () => resolve()));
    const waiting = lock(p, { backend: 'lease', pollInterval: 60_000, timeout: 20_000 });
    await napping; // the waiter found it held and waits for its next look
    hooks.leaseNap = undefined;
    holder.proc.kill('SIGKILL');
    const held = await waiting; // a 60 s poll would time out: the pid probe wakes it
    expect((await readOwner(p))?.pid).toBe(process.pid);
    await held.release();
    await holder.reap();
  });

  test('a live, heartbeating holder is never taken, however old its record says it is', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    const holder = await leaseHolder(p, { staleAfter: 200, heartbeat: 40 });
    const owner = await readOwner(p);
    // Age the record itself: creation time in 1970. Staleness must not care.
    writeFileSync(p, JSON.stringify({ ...owner, v: 1, createdAt: 1 }) + '\n');
    const err = await lock(p, { backend: 'lease', staleAfter: 200, pollInterval: 20, timeout: 1200 }).catch((e: unknown) => e);
    expect(isLockError(err, 'ETIMEDOUT')).toBe(true);
    expect(await holder.finish()).toBe(0);
  });

  test('an owner that cannot be proven dead is taken only after staleAfter unchanged, on our clock', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    // Another host's record: its pid means nothing here, so only the age rule applies.
    writeFileSync(
      p,
      JSON.stringify({ v: 1, backend: 'lease', pid: 1, hostname: `not-${hostname()}`, createdAt: Date.now() }) + '\n',
    );
    const t0 = performance.now();
    await expect(tryLock(p, { backend: 'lease', staleAfter: 300 })).rejects.toMatchObject({ code: 'ELOCKED' });
    const held = await lock(p, { backend: 'lease', staleAfter: 300, pollInterval: 25, timeout: 10_000 });
    const waited = performance.now() - t0;
    expect(waited).toBeGreaterThanOrEqual(300);
    expect(waited).toBeLessThan(5_000);
    await held.release();
  });

  test('a SIGSTOPped holder is taken over after staleAfter; after SIGCONT it learns, without crashing', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    const holder = await leaseHolder(p, { staleAfter: 400, heartbeat: 50 });
    holder.proc.kill('SIGSTOP');
    let held: FileLock | undefined;
    try {
      held = await lock(p, { backend: 'lease', staleAfter: 400, pollInterval: 25, timeout: 10_000 });
    } finally {
      holder.proc.kill('SIGCONT');
    }
    const lines = [await holder.line(), await holder.line()].sort();
    expect(lines).toEqual(['aborted ECOMPROMISED held=false', 'compromised ECOMPROMISED']);
    expect(await holder.finish()).toBe(0);
    // Its release reported the loss and did not touch our file.
    expect((await readOwner(p))?.pid).toBe(process.pid);
    expect(held.signal.aborted).toBe(false);
    await held.release();
  });

  test('N contenders breaking one stale lock at the same moment: exactly one wins', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    await staleLease(p);
    const n = 8;
    // Every contender has judged the lease stale before any of them claims it.
    const barrier = takeoverBarrier(n);
    const results = await Promise.allSettled(Array.from({ length: n }, () => tryLock(p, { backend: 'lease' })));
    hooks.beforeTakeover = undefined;
    const won = results.filter((r) => r.status === 'fulfilled');
    expect(barrier.arrived()).toBe(n);
    expect(won).toHaveLength(1);
    for (const r of results) if (r.status === 'rejected') expect(isLockError(r.reason, 'ELOCKED')).toBe(true);
    await (won[0] as PromiseFulfilledResult<FileLock>).value.release();
  });

  test('stress: processes breaking the same stale lock over and over never both win', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    const dead = deadPid();
    const kids = Array.from({ length: 4 }, () => start(process.execPath, [fixture('lease-breaker.mjs'), p, String(dead), '150']));
    const done = await Promise.all(kids.map((k) => k.line()));
    let total = 0;
    for (const line of done) {
      const [word, wins, violations] = line.split(' ');
      expect(word).toBe('done');
      expect(Number(violations)).toBe(0);
      total += Number(wins);
    }
    expect(total).toBe(600);
  }, 120_000);

  test('release never deletes a file that is no longer ours', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    const held = await tryLock(p, { backend: 'lease' });
    // Someone replaces the file (a rogue deletion, then a newcomer).
    spawnSync('sh', ['-c', `rm -f '${p}' && echo other > '${p}'`]);
    const err = await held.release().catch((e: unknown) => e);
    expect(isLockError(err, 'ECOMPROMISED')).toBe(true);
    expect(existsSync(p)).toBe(true);
  });

  test('shared locks are refused with ENOTSUP', async () => {
    await using d = await tempDir();
    await expect(tryLock(join(d.path, 'a.lock'), { backend: 'lease', shared: true })).rejects.toMatchObject({ code: 'ENOTSUP' });
    expect(readdirSync(d.path)).toEqual([]);
  });
});

test("'auto' picks the kernel backend on a local filesystem", async () => {
  await using d = await tempDir();
  const held = await tryLock(join(d.path, 'a.lock'));
  expect(held.backend).toBe('kernel');
  await held.release();
});
