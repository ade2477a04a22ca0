/**
 * The publication gap (docs/contract.md 4.1, podman#29641): a sweeper that try-locks
 * every entry of a staging directory and deletes what it could lock (how
 * containers/storage's RecoverStaleDirs works) must never take a staging lock
 * file away from the process that createAndLock() handed it to.
 *
 * One creator process runs createAndLock(dir, 'lock-') thousands of times and
 * checks, right after each creation and again just before unlockAndDelete(),
 * that it still holds the file at its path (same inode, still linked, and on
 * Linux that its own descriptor names that path). Two sweeper processes sweep
 * `dir` meanwhile. See test/fixtures/staging-creator.mjs and
 * staging-sweeper.mjs. Once through each way of creating (docs/staging-protocol.md):
 * an unnamed O_TMPFILE file linked under its name, and a hidden name renamed,
 * as where O_TMPFILE is missing.
 */
import { readdirSync } from 'node:fs';
import { afterEach, expect, test } from 'vitest';
import { fixture, reapAll, start } from './helpers/child.js';
import { doneOf, startReady, stopAll } from './helpers/staging-children.js';
import { tempDir } from './helpers/tmp.js';

afterEach(reapAll);

const CREATES = 8000;
const SWEEPERS = 2;

interface CreatorDone {
  creates: number;
  violations: number;
  details: unknown[];
}
interface SweeperDone {
  sweeps: number;
  reclaimed: number;
  busy: number;
  errors: string[];
}

async function race(filter: 'lock-' | 'all', how: 'tmpfile' | 'hidden'): Promise<void> {
  await using d = await tempDir();
  const sweepers = await Promise.all(Array.from({ length: SWEEPERS }, () => startReady('staging-sweeper.mjs', [d.path, filter])));
  const creator = start(process.execPath, [fixture('staging-creator.mjs'), d.path, String(CREATES), 'lock-', how]);
  const made = await doneOf<CreatorDone>(creator);
  // Fails fast: the creator stops at its 5th violation and reports them.
  expect(made, `${made.violations} violation(s) in ${made.creates} creates: ${JSON.stringify(made.details)}`).toEqual({
    creates: CREATES,
    violations: 0,
    details: [],
  });
  expect(await creator.finish()).toBe(0);
  const swept = await stopAll<SweeperDone>(sweepers);
  expect(swept.flatMap((s) => s.errors)).toEqual([]);
  // Not vacuous: the sweepers did find held lock files and left them alone.
  expect(swept.reduce((n, s) => n + s.busy, 0)).toBeGreaterThan(0);
  // Whatever a sweeper recreated by try-locking a just-deleted name, it deleted again.
  expect(readdirSync(d.path)).toEqual([]);
}

test(`sweepers of lock-* entries never take a lock createAndLock handed out (${CREATES} creates, O_TMPFILE)`, async () => {
  await race('lock-', 'tmpfile');
}, 50_000);

// Where O_TMPFILE is missing, the sweep may also see, lock and delete the
// hidden `.xlock-*.tmp` files of creations in progress: by design that must
// only make createAndLock retry.
test(`sweepers of every entry, hidden ones included, never break createAndLock (${CREATES} creates, hidden name)`, async () => {
  await race('all', 'hidden');
}, 50_000);
