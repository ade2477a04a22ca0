// Metric 1 (and 1b): an uncontended lock + release cycle, ours and the peers,
// interleaved round-robin in this process, against the C floor.
import { tryLock } from '@x/core';
import fsnx from 'fs-native-extensions';
import lockfile from 'lockfile';
import plf from 'proper-lockfile';
import { closeSync, constants as fsc, mkdirSync, openSync, unlinkSync } from 'node:fs';
import { open, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { floorCase, interleave, nodeCase, summarizeCase } from '../lib/interleave.mjs';
import { distributionColumns } from '../lib/table.mjs';

export const id = 'cycle';
export const FLOOR = 'C floor: open+OFD lock+fstat+unlock+close';
export const OURS = 'ours tryLock+release (async, kernel)';
export const LEASE = 'ours tryLock+release (async, lease)';
export const PLF = 'proper-lockfile lock+unlock (async)';

const lfLock = promisify(lockfile.lock);
const lfUnlock = promisify(lockfile.unlock);
const RW_CREAT = fsc.O_RDWR | fsc.O_CREAT;

/** Resolves a note when the lease backend is not there yet, else undefined. */
export async function leaseMissing(path) {
  try {
    const held = await tryLock(path, { backend: 'lease' });
    await held.release();
    return undefined;
  } catch (err) {
    if (err?.code === 'ENOTSUP') return `lease backend not available yet (tryLock(p, {backend:'lease'}) rejects ENOTSUP)`;
    throw err;
  }
}

export async function run(ctx) {
  const dir = join(ctx.dir, 'cycle');
  mkdirSync(dir);
  const p = (name) => join(dir, name);
  const notes = [];
  const cases = [
    floorCase(FLOOR, ctx.floorBin, (n) => ['cycle', 'issue', p('c-issue.lock'), n]),
    floorCase('C: open+OFD lock+record+close', ctx.floorBin, (n) => ['cycle', 'record', p('c-record.lock'), n], {
      role: 'info',
    }),
    floorCase('C: open+OFD lock+close (no record)', ctx.floorBin, (n) => ['cycle', 'bare', p('c-bare.lock'), n], {
      role: 'info',
    }),
    floorCase('C: floor + fstat/lstat inode check', ctx.floorBin, (n) => ['cycle', 'full', p('c-full.lock'), n], {
      role: 'info',
    }),
    nodeCase(
      OURS,
      async () => {
        const held = await tryLock(p('ours.lock'), { backend: 'kernel' });
        await held.release();
      },
      { role: 'ours' },
    ),
    nodeCase(
      'ours tryLock+release (async, default backend auto: + statfs)',
      async () => {
        const held = await tryLock(p('ours-auto.lock'));
        await held.release();
      },
      { role: 'info' },
    ),
  ];
  const missing = await leaseMissing(p('lease-probe.lock'));
  if (missing) notes.push(`1b skipped: ${missing}`);
  else {
    cases.push(
      nodeCase(
        LEASE,
        async () => {
          const held = await tryLock(p('lease.lock'), { backend: 'lease' });
          await held.release();
        },
        { role: 'ours' },
      ),
    );
  }
  cases.push(
    nodeCase(PLF, async () => {
      const release = await plf.lock(p('plf-async'), { realpath: false });
      await release();
    }),
    nodeCase('proper-lockfile lockSync+unlock (sync)', () => plf.lockSync(p('plf-sync'), { realpath: false })(), { sync: true }),
    nodeCase('lockfile (npm) lock+unlock (async)', async () => {
      await lfLock(p('lockfile.lock'), {});
      await lfUnlock(p('lockfile.lock'));
    }),
    nodeCase(
      'fs-native-extensions openSync+tryLock+unlock+closeSync',
      () => {
        const fd = openSync(p('fsnx-sync.lock'), RW_CREAT, 0o644);
        if (!fsnx.tryLock(fd)) throw new Error('fsnx: lock busy');
        fsnx.unlock(fd);
        closeSync(fd);
      },
      { sync: true },
    ),
    nodeCase('fs-native-extensions fsp.open+tryLock+close', async () => {
      const fh = await open(p('fsnx-async.lock'), RW_CREAT, 0o644);
      if (!fsnx.tryLock(fh.fd)) throw new Error('fsnx: lock busy');
      await fh.close();
    }),
    nodeCase('Node O_EXCL fsp.open(wx)+close+unlink (async)', async () => {
      const fh = await open(p('excl-async.lock'), 'wx');
      await fh.close();
      await unlink(p('excl-async.lock'));
    }),
    nodeCase(
      'Node O_EXCL openSync(wx)+closeSync+unlinkSync (sync)',
      () => {
        closeSync(openSync(p('excl-sync.lock'), 'wx'));
        unlinkSync(p('excl-sync.lock'));
      },
      { sync: true },
    ),
  );
  const s = ctx.settings.cycle;
  ctx.log(
    `cycle: ${cases.length} cases x ${s.rounds} rounds (+1 warm-up), up to ${s.maxOps} ops / ${s.budgetMs} ms per case per round`,
  );
  const samples = await interleave(cases, s);
  notes.push(
    'distribution columns: per-op samples over all rounds (a timer call per op); "mean/op (batch)": the median over rounds of each round\'s plain loop timed as a whole, as issue 13\'s harness measures; "x floor" and "x p-lockfile" divide those. The floor is issue 13\'s (no record write: ours rewrites its record only when the file does not name it already)',
  );
  return {
    id,
    title: '1. tryLock + release cycle (uncontended)',
    unit: 'µs per lock+release cycle',
    columns: [...distributionColumns, { key: 'batchMean', label: 'mean/op (batch)' }],
    ratio: { key: 'batchMean', floor: FLOOR, baseline: PLF },
    rows: cases.map((c) => ({ name: c.name, role: c.role, ...summarizeCase(samples.get(c.name)) })),
    notes,
  };
}
