/**
 * The errors people read (issue 12, item 7): `ELOCKED` names its holder,
 * from one formatter shared by both backends.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { tryLock } from '@x/core';
import { writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { holder, pyLockf, reapAll } from './helpers/child.js';
import { lockErrorOf } from './helpers/core-util.js';
import { tempDir } from './helpers/tmp.js';

afterEach(reapAll);

const held = String.raw`held \d+(\.\d)? m?s`;

describe.each(['kernel', 'lease'] as const)('%s: ELOCKED names the holder', (backend) => {
  test('another process: its pid, host, backend and how long it has held the lock', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    const { child, first } = await holder('tryLock', p, { backend });
    expect(first).toMatch(/^acquired /);
    const err = await lockErrorOf(tryLock(p, { backend }));
    expect(err.code).toBe('ELOCKED');
    expect(err.message).toMatch(
      new RegExp(`^ELOCKED: '${p}' is locked by pid ${child.proc.pid} on ${hostname()} \\(${backend}, ${held}\\)$`),
    );
    await child.finish();
  });

  test('this process: "held by this process"', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    const mine = await tryLock(p, { backend });
    const err = await lockErrorOf(tryLock(p, { backend }));
    expect(err.message).toMatch(new RegExp(`^ELOCKED: '${p}' is held by this process \\(${backend}, ${held}\\)$`));
    await mine.release();
  });
});

test('a classic POSIX holder (python lockf): the pid the kernel reports', async () => {
  await using d = await tempDir();
  const p = join(d.path, 'a.lock');
  const { child, first } = await pyLockf(p);
  expect(first).toBe('acquired');
  const err = await lockErrorOf(tryLock(p, { backend: 'kernel' }));
  expect(err.message).toBe(`ELOCKED: '${p}' is locked by pid ${child.proc.pid}`);
  await child.finish();
});

test("a legacy pid file naming our pid number is not taken for this process's lock", async () => {
  await using d = await tempDir();
  const p = join(d.path, 'a.pid');
  writeFileSync(p, `${process.pid}\n`); // nftban's format, written in another pid namespace, say
  const err = await lockErrorOf(tryLock(p, { backend: 'lease' }));
  expect(err.message).toBe(`ELOCKED: '${p}' is locked by pid ${process.pid}`);
});
