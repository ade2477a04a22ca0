/**
 * The unlinked-inode race under stress (docs/contract.md 3.3 item 2, 4.1): every release
 * of a staging lock file deletes it, so a contender that opened the file just
 * before its holder deleted it must not end up "holding" the dead inode while
 * a newcomer locks the fresh file at the same path.
 *
 * Several processes loop tryLockPath(p) and, whenever it succeeds, create the
 * exclusivity marker `p.owner` with O_EXCL (it must never exist already), keep
 * it over an event-loop turn, delete it, and unlockAndDelete() (see
 * test/fixtures/staging-contender.mjs). The deterministic interleaving of the
 * same race is in packages/staging/test/lockfile.test.ts.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, expect, test } from 'vitest';
import { reapAll } from './helpers/child.js';
import { doneOf, startReady } from './helpers/staging-children.js';
import { tempDir } from './helpers/tmp.js';

afterEach(reapAll);

const CONTENDERS = 4;
const EACH = 1000;

interface ContenderDone {
  held: number;
  busy: number;
  violations: number;
  details: unknown[];
}

test(`${CONTENDERS} processes × ${EACH} tryLockPath/unlockAndDelete cycles on one path: never two holders`, async () => {
  await using d = await tempDir();
  const p = join(d.path, 'lock-shared');
  const children = await Promise.all(
    Array.from({ length: CONTENDERS }, () => startReady('staging-contender.mjs', [p, String(EACH)])),
  );
  // Each child stops at its first violation; the first report fails the test
  // at once (afterEach reaps the others).
  const results = await Promise.all(
    children.map(async (c) => {
      const done = await doneOf<ContenderDone>(c);
      expect(
        done,
        `pid ${c.proc.pid}: ${done.violations} violation(s) after ${done.held} holds: ${JSON.stringify(done.details)}`,
      ).toMatchObject({
        held: EACH,
        violations: 0,
      });
      expect(await c.finish()).toBe(0);
      return done;
    }),
  );
  // Not vacuous: the contenders did run into each other.
  expect(results.reduce((n, r) => n + r.busy, 0)).toBeGreaterThan(0);
  expect(existsSync(p)).toBe(false);
  expect(existsSync(`${p}.owner`)).toBe(false);
}, 50_000);
