/**
 * Recovery never follows a symlink and never deletes outside the root
 * (docs/contract.md 4.2): a symlink planted in a stale staging directory, or in the root
 * itself under an entry's name (`<id>` or `lock-<id>`), pointing to a
 * directory or file outside the root, is at most unlinked; its target, and
 * everything under it, stays exactly as it was (same inodes, contents,
 * mtimes; no file created or deleted in it, so its directories' mtimes do not
 * move either). A dry run changes nothing on either side.
 */
import { StagingArea } from '@x/staging';
import { lstatSync, mkdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, expect, test } from 'vitest';
import { rootNames, snapshot, staleEntry } from './helpers/area.js';
import { reapAll } from './helpers/child.js';
import { tempDir } from './helpers/tmp.js';

afterEach(reapAll);

/** A directory outside the root with files, a subdirectory and a nested symlink. */
function makeOutside(base: string): string {
  const outside = join(base, 'outside');
  mkdirSync(join(outside, 'sub', 'deep'), { recursive: true });
  writeFileSync(join(outside, 'precious.txt'), 'precious data');
  writeFileSync(join(outside, 'lock-precious'), 'looks like a lock file');
  writeFileSync(join(outside, 'sub', 'a.bin'), Buffer.alloc(4096, 7));
  writeFileSync(join(outside, 'sub', 'deep', 'b'), 'b');
  symlinkSync(join(outside, 'sub'), join(outside, 'sub-link'));
  return outside;
}

/** The tree plus every directory's mtime: a file created or deleted in it (even briefly) shows. */
function state(outside: string): { tree: Record<string, string>; dirMtimes: Record<string, number> } {
  const dirMtimes: Record<string, number> = { '.': lstatSync(outside).mtimeMs };
  const tree = snapshot(outside);
  for (const [rel, what] of Object.entries(tree))
    if (what.startsWith('dir ')) dirMtimes[rel] = lstatSync(join(outside, rel)).mtimeMs;
  return { tree, dirMtimes };
}

test('a symlink planted in a stale staging directory is unlinked; its target outside the root and its files stay', async () => {
  await using d = await tempDir();
  const root = join(d.path, 'root');
  const outside = makeOutside(d.path);
  const area = await StagingArea.open(root);
  const stale = await staleEntry(root, 'SIGKILL', 16);
  symlinkSync(outside, join(stale.path, 'to-outside-dir'));
  symlinkSync(join(outside, 'precious.txt'), join(stale.path, 'to-outside-file'));
  mkdirSync(join(stale.path, 'nested', 'deeper'), { recursive: true });
  symlinkSync(outside, join(stale.path, 'nested', 'deeper', 'link'));
  symlinkSync(join(outside, 'sub'), join(stale.path, 'nested', 'sub'));
  symlinkSync('../../outside', join(stale.path, 'relative-link')); // relative, resolves outside
  const before = state(outside);

  const rootBefore = snapshot(root);
  // A dry run reports what the sweep then does.
  const expected = {
    scanned: 1,
    removed: 1,
    live: 0,
    bytesFreed: 16,
    errors: [],
    errorsOmitted: 0,
    skipped: [],
    skippedOmitted: 0,
  };
  const dry = await area.recover({ dryRun: true });
  // The links are not followed when measuring: only the 16-byte payload counts.
  expect(dry).toEqual(expected);
  expect(snapshot(root)).toEqual(rootBefore);
  expect(state(outside)).toEqual(before);

  const report = await area.recover();
  expect(report).toEqual(expected);
  expect(rootNames(root)).toEqual([]); // links and entry gone
  expect(state(outside)).toEqual(before); // the targets untouched
});

test('a symlink in the root named like an entry id, pointing outside, is unlinked and nothing outside is touched', async () => {
  await using d = await tempDir();
  const root = join(d.path, 'root');
  const outside = makeOutside(d.path);
  const area = await StagingArea.open(root);
  symlinkSync(outside, join(root, 'evildir')); // no lock file: looks like an orphan staging dir
  symlinkSync(join(outside, 'precious.txt'), join(root, 'evilfile'));
  const before = state(outside);

  const rootBefore = snapshot(root);
  const dry = await area.recover({ dryRun: true });
  expect(dry.errors).toEqual([]);
  expect(dry.bytesFreed).toBe(0); // a link's target is never measured
  expect(snapshot(root)).toEqual(rootBefore);
  expect(state(outside)).toEqual(before);

  const report = await area.recover();
  expect(report.errors).toEqual([]);
  expect(report.bytesFreed).toBe(0);
  expect(state(outside)).toEqual(before);
  expect(rootNames(root)).toEqual([]);
});

test('a stale entry whose <id> was replaced by a symlink to a directory outside: the link goes, the target stays', async () => {
  await using d = await tempDir();
  const root = join(d.path, 'root');
  const outside = makeOutside(d.path);
  const area = await StagingArea.open(root);
  const stale = await staleEntry(root, 'exit');
  rmSync(stale.path, { recursive: true });
  symlinkSync(outside, stale.path);
  const before = state(outside);

  const report = await area.recover();
  expect(report).toEqual({
    scanned: 1,
    removed: 1,
    live: 0,
    bytesFreed: 0,
    errors: [],
    errorsOmitted: 0,
    skipped: [],
    skippedOmitted: 0,
  });
  expect(rootNames(root)).toEqual([]);
  expect(state(outside)).toEqual(before);
});

test('lock-<id> planted as a symlink to a file outside (with <id> a symlink to a directory outside): nothing outside is touched', async () => {
  await using d = await tempDir();
  const root = join(d.path, 'root');
  const outside = makeOutside(d.path);
  const area = await StagingArea.open(root);
  symlinkSync(join(outside, 'lock-precious'), join(root, 'lock-planted'));
  symlinkSync(outside, join(root, 'planted'));
  symlinkSync(join(outside, 'precious.txt'), join(root, 'lock-alone')); // no <id> beside it
  const stale = await staleEntry(root, 'exit'); // the sweep goes on past the planted names
  const before = state(outside);
  const planted = [join(root, 'lock-alone'), join(root, 'lock-planted')];

  const dry = await area.recover({ dryRun: true });
  expect(state(outside)).toEqual(before);
  expect(dry.removed).toBe(1);
  const listed: string[] = [];
  for await (const e of area.list()) listed.push(`${e.id}:${e.state}`);
  expect(listed.sort()).toEqual(['alone:unknown', 'planted:unknown', `${stale.id}:free`].sort());
  expect(state(outside)).toEqual(before);

  for (let sweep = 0; sweep < 2; sweep++) {
    const report = await area.recover();
    // A lock path that is a symlink is never opened through: an error for that entry, the rest goes on.
    expect(report.errors.map((e) => e.path).sort()).toEqual(planted);
    for (const { error } of report.errors) expect(typeof (error as NodeJS.ErrnoException).code).toBe('string');
    expect({ ...report, errors: report.errors.length }).toEqual({
      scanned: 3 - sweep,
      removed: 1 - sweep,
      live: 0,
      bytesFreed: 16 * (1 - sweep),
      errors: 2,
      errorsOmitted: 0,
      skipped: [],
      skippedOmitted: 0,
    });
    expect(state(outside)).toEqual(before);
  }
  // What is left in the root are the links, still pointing where they did; no file was written through them.
  expect(rootNames(root)).toEqual(['lock-alone', 'lock-planted', 'planted']);
  for (const name of rootNames(root)) {
    expect(lstatSync(join(root, name)).isSymbolicLink(), name).toBe(true);
    expect(readlinkSync(join(root, name)).startsWith(outside), name).toBe(true);
  }
});
