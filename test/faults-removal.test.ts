/**
 * One removal routine (issue 12, item 5): `StagingDir.cleanup()` removes the
 * way `recover()` does, never crossing into another filesystem or a bind
 * mount (real mounts inside an entry), never following a symlink. Decision:
 * everything else is removed, the mount point (and so its parents) stays,
 * and the call rejects `EBUSY` naming it; the mount's contents are untouched.
 */
import { StagingArea } from '@x/staging';
import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { rootNames, snapshot, staleEntry } from './helpers/area.js';
import { reapAll } from './helpers/child.js';
import { osErrorOf } from './helpers/core-util.js';
import { canMount, tmpfs, type Mount } from './helpers/mounts.js';
import { tempDir } from './helpers/tmp.js';

afterEach(reapAll);

/** Bind-mounts `source` on `target`; unmounted at scope end. */
function bind(source: string, target: string): Mount {
  const r = spawnSync('mount', ['--bind', source, target], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`mount --bind failed: ${r.stderr}`);
  return {
    path: target,
    [Symbol.asyncDispose]: async () => {
      if (spawnSync('umount', [target]).status !== 0) spawnSync('umount', ['-l', target]);
    },
  };
}

/** Fills an entry directory: files, a subdirectory, and an empty mount point `mnt` inside `sub`. */
function populate(dir: string): string {
  writeFileSync(join(dir, 'a.txt'), 'a');
  mkdirSync(join(dir, 'sub', 'mnt'), { recursive: true });
  writeFileSync(join(dir, 'sub', 'b.txt'), 'b');
  writeFileSync(join(dir, 'z.txt'), 'z');
  return join(dir, 'sub', 'mnt');
}

describe.runIf(canMount())('a mount inside an entry', () => {
  test('cleanup: a tmpfs inside is neither entered nor removed (EBUSY), the rest goes, the lock is deleted', async () => {
    await using d = await tempDir();
    const area = await StagingArea.open(join(d.path, 'staging'));
    const dir = await area.create();
    const point = populate(dir.path);
    await using m = tmpfs('size=64k', join(d.path));
    await using b = bind(m.path, point);
    writeFileSync(join(b.path, 'on-tmpfs.txt'), 'keep me');
    const err = await osErrorOf(dir.cleanup());
    expect(err.code).toBe('EBUSY');
    expect(err.path).toBe(point);
    expect(readFileSync(join(m.path, 'on-tmpfs.txt'), 'utf8')).toBe('keep me');
    expect(readdirSync(dir.path)).toEqual(['sub']);
    expect(readdirSync(join(dir.path, 'sub'))).toEqual(['mnt']);
    expect(existsSync(dir.lockPath)).toBe(false);
  });

  test.each(['cleanup', 'recover'] as const)(
    '%s: a bind mount of a directory of the same filesystem is not entered',
    async (how) => {
      await using d = await tempDir();
      const outside = join(d.path, 'outside');
      mkdirSync(join(outside, 'deep'), { recursive: true });
      writeFileSync(join(outside, 'precious.txt'), 'precious');
      writeFileSync(join(outside, 'deep', 'more.txt'), 'more');
      const before = snapshot(outside);
      const area = await StagingArea.open(join(d.path, 'staging'));
      let path: string;
      let run: () => Promise<unknown>;
      if (how === 'cleanup') {
        const dir = await area.create();
        path = dir.path;
        run = () => dir.cleanup();
      } else {
        path = (await staleEntry(area.root)).path;
        run = async () => {
          const report = await area.recover();
          expect(report.errors).toHaveLength(1);
          throw report.errors[0]!.error;
        };
      }
      const point = populate(path);
      await using _b = bind(outside, point);
      const err = await osErrorOf(run());
      expect(err.code).toBe('EBUSY');
      expect(snapshot(outside)).toEqual(before);
      expect(readdirSync(join(path, 'sub'))).toEqual(['mnt']);
    },
  );
});

test('cleanup never follows a symlink out of the entry', async () => {
  await using d = await tempDir();
  const outside = join(d.path, 'outside');
  mkdirSync(outside);
  writeFileSync(join(outside, 'precious.txt'), 'precious');
  const before = snapshot(outside);
  const area = await StagingArea.open(join(d.path, 'staging'));
  const dir = await area.create();
  symlinkSync(outside, join(dir.path, 'link'));
  symlinkSync(join(outside, 'precious.txt'), join(dir.path, 'file-link'));
  await dir.cleanup();
  expect(snapshot(outside)).toEqual(before);
  expect(rootNames(area.root)).toEqual([]);
});
