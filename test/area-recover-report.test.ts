/**
 * A recovery report's memory does not grow with the number of entries
 * (docs/staging-protocol.md, "Recovery"): `errors` and `skipped` list the
 * first 1000 each, and `errorsOmitted` / `skippedOmitted` count the rest.
 */
import { StagingArea } from '@x/staging';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { tempDir } from './helpers/tmp.js';

const LIMIT = 1000;

test('a report lists the first 1000 failed entries and skipped names and counts the rest; nothing of theirs is deleted', async () => {
  await using d = await tempDir();
  const area = await StagingArea.open(join(d.path, 'staging'));
  const FAILED = LIMIT + 3;
  const SKIPPED = LIMIT + 2;
  // A lock-<id> that is a directory cannot be opened for locking (EISDIR): the entry fails.
  for (let i = 0; i < FAILED; i++) mkdirSync(join(area.root, `lock-e${i}`));
  // Names that fit neither layout are skipped.
  for (let i = 0; i < SKIPPED; i++) writeFileSync(join(area.root, `Other-${i}`), '');
  const progress: number[] = [];
  const report = await area.recover({ onProgress: (p) => progress.push(p.errors) });
  expect(report.errors).toHaveLength(LIMIT);
  expect(report.skipped).toHaveLength(LIMIT);
  expect(report).toMatchObject({ scanned: FAILED, removed: 0, live: 0, errorsOmitted: 3, skippedOmitted: 2 });
  expect(report.scanned).toBe(report.removed + report.live + report.errors.length + report.errorsOmitted);
  for (const { path, error } of report.errors) {
    expect(path).toMatch(/\/lock-e\d+$/);
    expect((error as NodeJS.ErrnoException).code).toBe('EISDIR');
  }
  // Progress counts every failure, listed or not.
  expect(progress.at(-1)).toBe(FAILED);
  for (let i = 0; i < FAILED; i++) expect(existsSync(join(area.root, `lock-e${i}`))).toBe(true);
  for (let i = 0; i < SKIPPED; i++) expect(existsSync(join(area.root, `Other-${i}`))).toBe(true);
});
