/**
 * `recover()` streams the root (docs/contract.md 4.2): its memory does not grow with the
 * number of entries. 100k stale entries are reclaimed (and, first, surveyed
 * by a dry run that deletes nothing) in a fresh process
 * (test/fixtures/area-recover-mem.mjs, run with `--expose-gc`) that samples
 * the live heap after a full GC every 5000 entries. The peak growth must be
 * small in absolute terms and the same for 100k entries as for 10k: an
 * implementation that keeps anything per entry (a `readdir` array of names,
 * a list of reclaimed paths) grows by megabytes between the two.
 *
 * The root lives on tmpfs (/dev/shm) when there is one: the memory behaviour
 * does not depend on the filesystem, and on the 2-core VM this was written
 * on, generating and recovering 100k entries on ext4 took ~85 s against
 * ~16 s on tmpfs (the disk, not the sweep). Without /dev/shm the test uses
 * the usual temp dir and a longer timeout.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { dir } from 'tmp-promise';
import { afterEach, expect, test } from 'vitest';
import { fixture, reapAll, start } from './helpers/child.js';
import { tempDir, type TempDir } from './helpers/tmp.js';

afterEach(reapAll);

const MiB = 1024 * 1024;
const SMALL = 10_000;
const LARGE = 100_000;
const BLOB = 16; // bytes in each stale entry's one file (see the fixture)

const shm = (() => {
  try {
    return statSync('/dev/shm').isDirectory();
  } catch {
    return false;
  }
})();

async function scratch(): Promise<TempDir> {
  if (!shm) return tempDir();
  const d = await dir({ tmpdir: '/dev/shm', unsafeCleanup: true, prefix: 'xlock-test-' });
  return { path: d.path, [Symbol.asyncDispose]: () => d.cleanup() };
}

interface MemReport {
  scanned: number;
  removed: number;
  live: number;
  bytesFreed: number;
  errors: number;
  heapBase: number;
  heapPeak: number;
  rssBase: number;
  rssPeak: number;
  ms: number;
  generateMs: number;
}

async function sweep(root: string, generate: number | null, dry = false): Promise<MemReport> {
  // area-recover-mem.mjs <root> [generate <count>] [dry]: `dry` is the 4th argument.
  const argv = generate !== null ? ['generate', String(generate), ...(dry ? ['dry'] : [])] : dry ? ['-', '-', 'dry'] : [];
  const child = start(process.execPath, ['--expose-gc', fixture('area-recover-mem.mjs'), root, ...argv]);
  const line = await child.line();
  expect(await child.finish()).toBe(0);
  return JSON.parse(line) as MemReport;
}

const growth = (r: MemReport): number => r.heapPeak - r.heapBase;

test(
  `recover() of ${LARGE} stale entries (dry run, then for real) keeps the heap flat: same growth as for ${SMALL}`,
  async () => {
    await using d = await scratch();
    const small = await sweep(join(d.path, 'small'), SMALL);
    expect(small).toMatchObject({ scanned: SMALL, removed: SMALL, live: 0, bytesFreed: SMALL * BLOB, errors: 0 });
    expect(readdirSync(join(d.path, 'small'))).toEqual([]);

    const root = join(d.path, 'large');
    const dry = await sweep(root, LARGE, true);
    expect(dry).toMatchObject({ scanned: LARGE, removed: LARGE, live: 0, bytesFreed: LARGE * BLOB, errors: 0 });
    // The dry run deleted nothing and created nothing: every lock file and directory is still there.
    expect(readdirSync(root)).toHaveLength(2 * LARGE);
    expect(existsSync(join(root, 's0', 'blob')) && existsSync(join(root, `lock-s${(LARGE - 1).toString(36)}`))).toBe(true);

    const large = await sweep(root, null);
    expect(large).toMatchObject({ scanned: LARGE, removed: LARGE, live: 0, bytesFreed: LARGE * BLOB, errors: 0 });
    expect(readdirSync(root)).toEqual([]);

    const report = `heap growth: ${SMALL} -> ${(growth(small) / 1024).toFixed(0)} KiB, ${LARGE} dry -> ${(growth(dry) / 1024).toFixed(0)} KiB, ${LARGE} -> ${(growth(large) / 1024).toFixed(0)} KiB; sweep ms: ${small.ms.toFixed(0)}, ${dry.ms.toFixed(0)}, ${large.ms.toFixed(0)}`;
    expect(growth(large), report).toBeLessThan(16 * MiB);
    expect(growth(dry), report).toBeLessThan(16 * MiB);
    // Independent of the count: 90k more entries add less than 12 bytes each.
    expect(growth(large) - growth(small), report).toBeLessThan(1 * MiB);
    expect(growth(dry) - growth(small), report).toBeLessThan(1 * MiB);
    // The process as a whole (native buffers included) stays bounded too.
    expect(large.rssPeak - large.rssBase, report).toBeLessThan(64 * MiB);
  },
  shm ? 90_000 : 240_000,
);
