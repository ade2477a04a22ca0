/**
 * Faults on real mounts (issue 12, items 3 and 4): a read-only tmpfs, a full
 * tmpfs (no blocks, or no inodes), and an unprivileged user. Each call
 * rejects with the real cause (`EROFS`, `ENOSPC`, `EACCES`, never Node's
 * recursive-mkdir `ENOENT`) and the path that failed, and leaves nothing.
 */
import { describe, expect, test } from 'vitest';
import { tryLock } from '@x/core';
import { StagingArea } from '@x/staging';
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { osErrorOf } from './helpers/core-util.js';
import {
  canDropPrivileges,
  canMount,
  fillBlocks,
  fillInodes,
  openUp,
  remountReadOnly,
  runAsNobody,
  tmpfs,
} from './helpers/mounts.js';
import { tempDir } from './helpers/tmp.js';

const repo = fileURLToPath(new URL('..', import.meta.url));
const backends = ['kernel', 'lease'] as const;

describe.runIf(canMount())('missing parents on a read-only filesystem: EROFS with the path', () => {
  test.each(backends)('%s: tryLock with parents: true', async (backend) => {
    await using m = tmpfs('ro,size=64k');
    const p = join(m.path, 'a', 'b', 'x.lock');
    const err = await osErrorOf(tryLock(p, { backend, parents: true }));
    expect(err.code).toBe('EROFS');
    expect(err.path).toBe(join(m.path, 'a'));
  });

  test('StagingArea.open of a new root', async () => {
    await using m = tmpfs('size=64k');
    mkdirSync(join(m.path, 'store'));
    remountReadOnly(m);
    const root = join(m.path, 'store', 'staging', 'area');
    const err = await osErrorOf(StagingArea.open(root));
    expect(err.code).toBe('EROFS');
    expect(err.path).toBe(join(m.path, 'store', 'staging'));
  });

  test('an existing root on a read-only filesystem still opens (and lists)', async () => {
    await using m = tmpfs('size=64k');
    await StagingArea.open(join(m.path, 'area'));
    remountReadOnly(m);
    const area = await StagingArea.open(join(m.path, 'area'));
    expect(area.root).toBe(join(m.path, 'area'));
  });
});

describe.runIf(canMount())('a full filesystem: ENOSPC with the path', () => {
  test.each(backends)('%s: tryLock with parents: true, no inodes left', async (backend) => {
    await using m = tmpfs('size=64k,nr_inodes=16');
    fillInodes(m.path);
    const p = join(m.path, 'a', 'x.lock');
    const err = await osErrorOf(tryLock(p, { backend, parents: true }));
    expect(err.code).toBe('ENOSPC');
    expect(err.path).toBe(join(m.path, 'a'));
  });

  test('StagingArea.open of a new root, no inodes left', async () => {
    await using m = tmpfs('size=64k,nr_inodes=16');
    fillInodes(m.path);
    const err = await osErrorOf(StagingArea.open(join(m.path, 'x', 'staging')));
    expect(err.code).toBe('ENOSPC');
    expect(err.path).toBe(join(m.path, 'x'));
  });

  test("lease: no block left for the owner record: ENOSPC with the lock's path, no file left", async () => {
    await using m = tmpfs('size=64k,nr_inodes=64');
    mkdirSync(join(m.path, 'locks'));
    fillBlocks(m.path);
    const p = join(m.path, 'locks', 'x.lock');
    const err = await osErrorOf(tryLock(p, { backend: 'lease' }));
    expect(err.code).toBe('ENOSPC');
    expect(err.path).toBe(p);
    expect(readdirSync(join(m.path, 'locks'))).toEqual([]);
  });
});

describe.runIf(canDropPrivileges())('an unprivileged user: EACCES with the path', () => {
  const script = `
    import { tryLock } from '@x/core';
    import { StagingArea } from '@x/staging';
    const [what, path, backend] = process.argv.slice(1);
    try {
      if (what === 'lock') await tryLock(path, { backend, parents: true });
      else await StagingArea.open(path);
      console.log(JSON.stringify({ ok: true }));
    } catch (err) {
      console.log(JSON.stringify({ code: err.code, path: err.path }));
    }`;

  test.each(backends)("%s: tryLock with parents: true under root's directory", async (backend) => {
    await using d = await tempDir();
    openUp(d.path);
    mkdirSync(join(d.path, 'root-only'), { mode: 0o755 });
    const r = runAsNobody(script, ['lock', join(d.path, 'root-only', 'a', 'x.lock'), backend], repo);
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({ code: 'EACCES', path: join(d.path, 'root-only', 'a') });
    expect(readdirSync(join(d.path, 'root-only'))).toEqual([]);
  });

  test("StagingArea.open of a new root under root's directory", async () => {
    await using d = await tempDir();
    openUp(d.path);
    mkdirSync(join(d.path, 'root-only'), { mode: 0o755 });
    const r = runAsNobody(script, ['open', join(d.path, 'root-only', 'a', 'staging')], repo);
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({ code: 'EACCES', path: join(d.path, 'root-only', 'a') });
  });
});
