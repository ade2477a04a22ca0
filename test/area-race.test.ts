/**
 * The staging-area invariant under concurrency (docs/contract.md 4.2): `recover()`
 * never deletes a live entry, even while it runs in several processes at
 * once and other processes create, stage, commit and clean up entries as fast
 * as they can. A staging directory exists under its name only while its lock
 * is held, and a sweep deletes `<id>` only while it holds `lock-<id>`.
 *
 * Creator processes (test/fixtures/area-creator.mjs) run thousands of
 * create -> write -> stage -> check -> commit-or-cleanup cycles and report
 * every loss (a directory, file or lock file that vanished or changed under
 * them, or a failed commit/cleanup); sweeper processes
 * (test/fixtures/area-sweeper.mjs) loop `recover()` meanwhile. No entry is
 * ever abandoned, so a sweep that frees any bytes deleted a live one's data.
 */
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, expect, test } from 'vitest';
import { fixture, reapAll, start } from './helpers/child.js';
import { doneOf, startReady, stopAll } from './helpers/staging-children.js';
import { rootNames } from './helpers/area.js';
import { tempDir } from './helpers/tmp.js';

afterEach(reapAll);

const CREATORS = 2;
const CYCLES = 1500;
const SWEEPERS = 2;

interface CreatorDone {
  cycles: number;
  commits: number;
  cleanups: number;
  losses: number;
  lockSeenAfter: number;
  details: unknown[];
}
interface SweeperDone {
  sweeps: number;
  scanned: number;
  removed: number;
  live: number;
  bytesFreed: number;
  errors: string[];
}

test(`${SWEEPERS} processes looping recover() never delete a live entry of ${CREATORS} processes doing ${CYCLES} create/commit/cleanup cycles each`, async () => {
  await using d = await tempDir();
  const root = join(d.path, 'root');
  const out = join(d.path, 'out');
  mkdirSync(root, { mode: 0o700 });
  mkdirSync(out);
  const sweepers = await Promise.all(Array.from({ length: SWEEPERS }, () => startReady('area-sweeper.mjs', [root])));
  const creators = Array.from({ length: CREATORS }, () =>
    start(process.execPath, [fixture('area-creator.mjs'), root, out, String(CYCLES)]),
  );
  const made = await Promise.all(creators.map((c) => doneOf<CreatorDone>(c)));
  for (const m of made) {
    // Fails fast: a creator stops at its 5th loss and reports them.
    expect(m, `${m.losses} loss(es) in ${m.cycles} cycles: ${JSON.stringify(m.details)}`).toEqual({
      lockSeenAfter: expect.any(Number),
      cycles: CYCLES,
      commits: CYCLES / 2,
      cleanups: CYCLES / 2,
      losses: 0,
      details: [],
    });
  }
  for (const c of creators) expect(await c.finish()).toBe(0);
  const swept = await stopAll<SweeperDone>(sweepers);
  expect(swept.flatMap((s) => s.errors)).toEqual([]);
  // Every entry was committed or cleaned up by its live writer: no sweep
  // ever reclaimed one (an entry that finishes while a sweep looks at it is
  // not counted), nor freed a byte.
  expect(
    swept.reduce((n, s) => n + s.removed, 0),
    JSON.stringify(swept),
  ).toBe(0);
  expect(
    swept.reduce((n, s) => n + s.bytesFreed, 0),
    JSON.stringify(swept),
  ).toBe(0);
  // Not vacuous: the sweeps ran many times and did meet held entries.
  for (const s of swept) expect(s.sweeps).toBeGreaterThan(20);
  expect(swept.reduce((n, s) => n + s.live, 0)).toBeGreaterThan(50);
  // Nothing left behind in the root; every commit is in place with its data.
  expect(rootNames(root)).toEqual([]);
  const committed = readdirSync(out).filter((n) => !n.startsWith('.'));
  expect(committed).toHaveLength((CREATORS * CYCLES) / 2);
  for (const name of committed.slice(0, 50))
    expect(readFileSync(join(out, name, 'data'), 'utf8')).toMatch(new RegExp(`^${name}-`));
}, 60_000);
