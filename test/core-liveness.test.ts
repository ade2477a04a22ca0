/**
 * One judgement of "is this holder alive" (packages/core/src/internal/identity.ts):
 * a record is believed only while the process it names is that process (same
 * start time), for `readOwner` and for `ELOCKED`'s "held by this process".
 * The lease side of the same judgement (dead pid, zombie, other start time)
 * is in lease.test.ts.
 */
import { readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { isProcessAlive, readOwner, tryLock } from '@x/core';
import { holder, reapAll } from './helpers/child.js';
import { idleChild, lockErrorOf } from './helpers/core-util.js';
import { tempDir } from './helpers/tmp.js';

afterEach(reapAll);

const startTicks = (pid: number): number => Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[19]);

/** A kernel record of ours naming `pid` with `ticks` as its start time, on this host, boot and pid namespace. */
function record(pid: number, ticks: number): string {
  const me = {
    hostname: hostname(),
    bootId: readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(),
    pidNs: readlinkSync('/proc/self/ns/pid'),
  };
  return JSON.stringify({ v: 1, backend: 'kernel', pid, ...me, startTicks: ticks, createdAt: Date.now() }) + '\n';
}

/** A child holding `p` with a kernel lock, and the record in `p` replaced by `text`. */
async function heldWithRecord(p: string, text: string) {
  const { child, first } = await holder('tryLock', p, { backend: 'kernel' });
  expect(first).toMatch(/^acquired/);
  writeFileSync(p, text);
  return child;
}

describe('liveness of a recorded holder', () => {
  test('a record naming a running process by its start time is believed', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    const idle = idleChild();
    const pid = idle.proc.pid!;
    const child = await heldWithRecord(p, record(pid, startTicks(pid)));
    expect((await readOwner(p))?.pid).toBe(pid);
    child.proc.stdin!.end();
    expect(await child.finish()).toBe(0);
  });

  test('a record naming a reused pid (another start time) is not: the kernel finds the holder', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    const idle = idleChild();
    const pid = idle.proc.pid!;
    const child = await heldWithRecord(p, record(pid, startTicks(pid) + 1000));
    const owner = await readOwner(p);
    expect(owner?.held).toBe(true);
    expect(owner?.pid).toBe(child.proc.pid);
    child.proc.stdin!.end();
    expect(await child.finish()).toBe(0);
  });

  test("ELOCKED says 'held by this process' only for this very process, not an earlier one with our pid", async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    const child = await heldWithRecord(p, record(process.pid, startTicks(process.pid) + 1000));
    const err = await lockErrorOf(tryLock(p, { backend: 'kernel' }));
    expect(err.code).toBe('ELOCKED');
    expect(err.message).not.toMatch(/held by this process/);
    writeFileSync(p, record(process.pid, startTicks(process.pid)));
    expect((await lockErrorOf(tryLock(p, { backend: 'kernel' }))).message).toMatch(/held by this process/);
    child.proc.stdin!.end();
    expect(await child.finish()).toBe(0);
  });

  test('isProcessAlive: a reaped child is dead, a running one alive, another host alive', async () => {
    const idle = idleChild();
    const pid = idle.proc.pid!;
    expect(isProcessAlive(pid)).toBe(true);
    expect(isProcessAlive(pid, `not-${hostname()}`)).toBe(true);
    idle.proc.stdin!.end();
    await idle.finish();
    expect(isProcessAlive(pid)).toBe(false);
    expect(isProcessAlive(pid, `not-${hostname()}`)).toBe(true);
  });
});
