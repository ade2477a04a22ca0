/**
 * The publication gap, forced deterministically (docs/contract.md 4.1): between our
 * exclusive create of the hidden file and our lock, one sweeper locks it,
 * deletes it and lets go, and another creates a fresh file under the same
 * hidden name (tryLockPath creates what it opens). Our lock then lands on the
 * deleted inode; publishing the hidden name would hand out a file we do not
 * hold. createAndLock must notice, leave the stranger's file alone, and retry.
 * The hidden name is createAndLock's way where `O_TMPFILE` is missing
 * (forced here with hooks.createNoTmpfile); with it there is no name to race
 * on.
 */
import { hooks } from '@x/core/testing';
import { createAndLock } from '@x/staging';
import { lstatSync, readdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { afterEach, expect, test } from 'vitest';
import { pyLockf, reapAll } from './helpers/child.js';
import { tempDir } from './helpers/tmp.js';

afterEach(async () => {
  hooks.afterCreate = undefined;
  hooks.createNoTmpfile = undefined;
  await reapAll();
});

test('a hidden file replaced before our lock is never published as ours', async () => {
  await using d = await tempDir();
  let replaced = '';
  hooks.createNoTmpfile = true;
  hooks.afterCreate = (hidden) => {
    hooks.afterCreate = undefined;
    replaced = hidden;
    unlinkSync(hidden); // sweeper 1: locked it, deleted it, released it
    writeFileSync(hidden, 'stranger\n', { flag: 'wx' }); // sweeper 2's create
  };
  const held = await createAndLock(d.path, 'lock-');
  try {
    expect(replaced).not.toBe('');
    // The stranger's file is not ours: neither published nor deleted.
    expect(readdirSync(d.path).sort()).toEqual([basename(replaced), held.name].sort());
    expect(lstatSync(held.path).size).toBeGreaterThan(0);
    // What is at the published path is the inode we hold: python cannot lock it.
    const busy = await pyLockf(held.path, 'try');
    expect(busy.first).toBe('busy');
    expect(await busy.child.finish()).toBe(0);
  } finally {
    await held.unlockAndDelete();
  }
  expect(readdirSync(d.path)).toEqual([basename(replaced)]);
});
