/**
 * @x/core `readOwner` (tolerant of whatever a lock file holds) and
 * `isProcessAlive` (conservative: only ESRCH is dead, another host is
 * alive) — docs/contract.md 3.2.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, symlink, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { isProcessAlive, readOwner } from '@x/core';
import { reapAll, start } from './helpers/child.js';
import { tempDir } from './helpers/tmp.js';
import { exited, within } from './helpers/core-util.js';

afterEach(reapAll);

/** Writes `content` to a fresh file in `dir` and reads its owner. */
async function ownerOf(dir: string, content: string | Buffer) {
  const p = join(dir, 'x.lock');
  await writeFile(p, content);
  return within(readOwner(p), 5_000, 'readOwner');
}

/** 4 KiB of deterministic pseudo-random bytes (no test-to-test variation). */
function noise(): Buffer {
  const b = Buffer.alloc(4096);
  let x = 0x2545f491;
  for (let i = 0; i < b.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

describe('readOwner', () => {
  test.each<[string, string | Buffer]>([
    ['an empty file', ''],
    ['whitespace', ' \n\t\n'],
    ['NUL bytes', Buffer.alloc(64)],
    ['random bytes', noise()],
    ['a JSON array', '[1,2,3]\n'],
    ['a JSON string', '"1234"\n'],
    ['plain words', 'locked by the installer\n'],
    ['a zero pid', '0\n'],
    ['a negative pid', '-5\n'],
    ['a pid beyond 2^31-1', '99999999999\n'],
    ['a huge file of garbage', 'x'.repeat(1 << 20)],
  ])('%s resolves null', async (_name, content) => {
    await using d = await tempDir();
    expect(await ownerOf(d.path, content)).toBeNull();
  });

  test('a truncated JSON record resolves (null or what it has), never rejects', async () => {
    await using d = await tempDir();
    const owner = await ownerOf(d.path, '{"v":1,"backend":"kernel","pid":4242,"hostn');
    expect(owner === null || owner.pid === 4242).toBe(true);
  });

  test('fields of the wrong type are undefined, the rest is kept', async () => {
    await using d = await tempDir();
    const owner = await ownerOf(
      d.path,
      JSON.stringify({ v: 1, pid: '12', hostname: 5, backend: 'nfs', createdAt: 'yesterday', extra: { a: 1 } }) + '\n',
    );
    expect(owner).not.toBeNull();
    expect(owner?.pid).toBeUndefined();
    expect(owner?.hostname).toBeUndefined();
    expect(owner?.backend).toBeUndefined();
    expect(owner?.startedAt).toBeUndefined();
    const partial = await ownerOf(d.path, JSON.stringify({ pid: 31337 }) + '\n');
    expect(partial?.pid).toBe(31337);
    expect(partial?.hostname).toBeUndefined();
    expect(partial?.backend).toBeUndefined();
  });

  test('a full record, also with an older record as a tail and unknown fields', async () => {
    await using d = await tempDir();
    const record = { v: 1, backend: 'lease', pid: 77, hostname: 'build-3', createdAt: 1_763_884_800_000, future: [1] };
    const expected = { pid: 77, hostname: 'build-3', backend: 'lease', startedAt: 1_763_884_800_000 };
    expect(await ownerOf(d.path, JSON.stringify(record) + '\n')).toMatchObject(expected);
    expect(
      await ownerOf(d.path, JSON.stringify(record) + '\n' + '{"v":1,"backend":"kernel","pid":1234567,"hostname":"x"}\n'),
    ).toMatchObject(expected);
  });

  test('legacy "1234" and "1234 host" text (nftban, Julia Pidfile)', async () => {
    await using d = await tempDir();
    const bare = await ownerOf(d.path, '1234\n');
    expect(bare?.pid).toBe(1234);
    expect(bare?.hostname).toBeUndefined();
    expect(await ownerOf(d.path, '1234 host\n')).toMatchObject({ pid: 1234, hostname: 'host' });
    expect(await ownerOf(d.path, '1234 build-3.example.org')).toMatchObject({
      pid: 1234,
      hostname: 'build-3.example.org',
    });
  });

  test('age is measured from the file mtime', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'x.lock');
    await writeFile(p, '1234\n');
    const tenSecondsAgo = new Date(Date.now() - 10_000);
    await utimes(p, tenSecondsAgo, tenSecondsAgo);
    const owner = await readOwner(p);
    expect(owner?.age).toBeGreaterThanOrEqual(9_000);
    expect(owner?.age).toBeLessThan(60_000);
  });

  test('a missing file, a directory and a FIFO resolve null (a FIFO does not hang)', async () => {
    await using d = await tempDir();
    expect(await readOwner(join(d.path, 'missing.lock'))).toBeNull();
    const dir = join(d.path, 'dir.lock');
    await mkdir(dir);
    expect(await readOwner(dir)).toBeNull();
    const fifo = join(d.path, 'fifo.lock');
    execFileSync('mkfifo', [fifo]);
    expect(await within(readOwner(fifo), 5_000, 'readOwner on a FIFO')).toBeNull();
  });

  test('a symlink is not followed: the target record is never reported', async () => {
    await using d = await tempDir();
    const target = join(d.path, 'real.lock');
    await writeFile(target, JSON.stringify({ v: 1, backend: 'kernel', pid: 4242 }) + '\n');
    const link = join(d.path, 'x.lock');
    await symlink(target, link);
    const result = await readOwner(link).then(
      (owner) => ({ owner }),
      (err: NodeJS.ErrnoException) => ({ code: err.code }),
    );
    expect(result).not.toEqual({ owner: expect.objectContaining({ pid: 4242 }) });
    expect([{ owner: null }, { code: 'ELOOP' }]).toContainEqual(result);
  });
});

describe('isProcessAlive', () => {
  test('our own pid is alive; a reaped child is not', async () => {
    expect(isProcessAlive(process.pid)).toBe(true);
    expect(isProcessAlive(process.pid, hostname())).toBe(true);
    const child = start(process.execPath, ['-e', '']);
    await exited(child.proc); // the exit event fires after the child is reaped
    expect(isProcessAlive(child.proc.pid!)).toBe(false);
    expect(isProcessAlive(child.proc.pid!, hostname())).toBe(false);
  });

  test('pid 1 (not ours to signal) is alive: only ESRCH means dead', () => {
    expect(isProcessAlive(1)).toBe(true);
  });

  test.each([0, -1, NaN, 1.5, Infinity, -Infinity, 2 ** 31, Number.MAX_SAFE_INTEGER + 2])('%s is not a process', (pid) => {
    expect(isProcessAlive(pid)).toBe(false);
  });

  test('a pid on another host is alive, even one that is dead here', async () => {
    const child = start(process.execPath, ['-e', '']);
    await exited(child.proc);
    expect(isProcessAlive(child.proc.pid!, `not-${hostname()}`)).toBe(true);
    expect(isProcessAlive(process.pid, `not-${hostname()}`)).toBe(true);
  });
});
