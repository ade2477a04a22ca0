// Metric 2: createAndLock + unlockAndDelete (a fresh, uniquely named staging
// lock file, published without a gap) against the gap-free C floor.
import { createAndLock } from '@x/staging';
import { closeSync, mkdirSync, openSync, unlinkSync } from 'node:fs';
import { open, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { floorCase, interleave, nodeCase, summarizeCase } from '../lib/interleave.mjs';
import { distributionColumns } from '../lib/table.mjs';

export const id = 'create';
export const FLOOR = 'C floor: hidden O_EXCL+lock+renameat2+unlink+close';
export const OURS = 'ours createAndLock+unlockAndDelete';

export async function run(ctx) {
  const dir = join(ctx.dir, 'create');
  mkdirSync(dir);
  let seq = 0;
  const cases = [
    floorCase(FLOOR, ctx.floorBin, (n) => ['create', 'plain', dir, n]),
    floorCase('C: floor + owner record (pwrite+ftruncate)', ctx.floorBin, (n) => ['create', 'record', dir, n], { role: 'info' }),
    nodeCase(
      OURS,
      async () => {
        const entry = await createAndLock(dir, 'lock-');
        await entry.unlockAndDelete();
      },
      { role: 'ours' },
    ),
    nodeCase('Node O_EXCL fsp.open(wx)+close+unlink (async)', async () => {
      const p = join(dir, `excl-a-${seq++}`);
      const fh = await open(p, 'wx', 0o600);
      await fh.close();
      await unlink(p);
    }),
    nodeCase(
      'Node O_EXCL openSync(wx)+closeSync+unlinkSync (sync)',
      () => {
        const p = join(dir, `excl-s-${seq++}`);
        closeSync(openSync(p, 'wx', 0o600));
        unlinkSync(p);
      },
      { sync: true },
    ),
  ];
  const s = ctx.settings.cycle;
  ctx.log(`create: ${cases.length} cases x ${s.rounds} rounds`);
  const samples = await interleave(cases, s);
  return {
    id,
    title: '2. createAndLock + unlockAndDelete cycle',
    unit: 'µs per create+delete cycle',
    columns: [...distributionColumns, { key: 'batchMean', label: 'mean/op (batch)' }],
    ratio: { key: 'batchMean', floor: FLOOR },
    rows: cases.map((c) => ({ name: c.name, role: c.role, ...summarizeCase(samples.get(c.name)) })),
    notes: [
      'ours also writes an owner record before publishing (the "+ owner record" row is the same sequence in C); O_EXCL rows are not gap-free and lock nothing: reference only; "x floor" divides the batch means (a plain loop timed as a whole, median over rounds)',
    ],
  };
}
