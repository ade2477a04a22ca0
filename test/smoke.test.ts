import { afterEach, expect, test } from 'vitest';
import { isLockError, tryLock } from '@x/core';
import { join } from 'node:path';
import { holder, pyLockf, reapAll } from './helpers/child.js';
import { tempDir } from './helpers/tmp.js';

afterEach(reapAll);

test('a child holder excludes us until it releases', async () => {
  await using d = await tempDir();
  const p = join(d.path, 'a.lock');
  const { child, first } = await holder('tryLock', p);
  expect(first).toMatch(/^acquired /);
  const err = await tryLock(p).catch((e: unknown) => e);
  expect(isLockError(err, 'ELOCKED')).toBe(true);
  expect(await child.finish()).toBe(0);
  await (await tryLock(p)).release();
});

test('python lockf holder excludes us', async () => {
  await using d = await tempDir();
  const p = join(d.path, 'a.lock');
  const { child, first } = await pyLockf(p);
  expect(first).toBe('acquired');
  await expect(tryLock(p)).rejects.toMatchObject({ code: 'ELOCKED', owner: { pid: child.proc.pid } });
  await child.finish();
});
