// Metric 4: crash takeover. A child holds the lock; a waiter is already
// waiting; the parent SIGKILLs the child and measures the time from the kill
// to the waiter's acquisition (CLOCK_MONOTONIC). Each round starts every
// case's holder at once (process start-up dominates the wall time), then
// runs the samples one after another. proper-lockfile needs whole seconds per
// sample, so it gets fewer.
//
// The kernel frees a killed holder's lock only when the process is torn
// down, after its memory is unmapped: a Node holder takes longer to die than
// a python one. Two extra rows separate the holder's death from the waiter's
// wake-up: ours waiting on a python holder, and python waiting on ours.
import { tryLock } from '@x/core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { waiting } from '../lib/peers.mjs';
import { Child, sleep } from '../lib/proc.mjs';
import { nowNs, randInt, summarize } from '../lib/stats.mjs';
import { leaseMissing } from './cycle.mjs';

export const id = 'takeover';
export const FLOOR = 'python lockf waiter, python holder';
export const OURS = 'ours lock() waiting, ours holder (kernel)';
export const LEASE = 'ours lock() waiting (lease, default staleAfter)';
export const LEASE_SHORT = 'ours lock() waiting (lease, staleAfter';
export const PLF = 'proper-lockfile lock (retries 1..10 ms)';

/**
 * One sample on a holder that has acquired: start waiting (`wait(path)`
 * resolves once the waiter is in place, with `done`: a promise of its
 * acquisition), wait `killDelay` ms, SIGKILL the holder, time the acquisition.
 */
async function sample({ wait, killDelay }, child, path) {
  const { done } = await wait(path);
  await sleep(killDelay());
  const tKill = nowNs();
  child.kill('SIGKILL');
  const { release, tAcq } = await done;
  await release();
  await child.exit;
  return (tAcq - tKill) / 1e6;
}

/** Waits in this process with `acquire`, which resolves a release function. */
const here = (acquire) => async (path) => ({
  done: acquire(path).then((release) => ({ release, tAcq: nowNs() })),
});

/** Waits in a python child blocked in fcntl.lockf. */
async function python(path) {
  const w = Child.python('wait.py', [path]);
  await w.expect('waiting');
  await sleep(20); // python is blocked in lockf by now
  return { done: w.expect('acq').then(([t]) => ({ tAcq: Number(t), release: () => w.end() })) };
}

export async function run(ctx) {
  const s = ctx.settings.takeover;
  const dir = join(ctx.dir, 'takeover');
  mkdirSync(dir);
  const notes = [];
  const plfStale = s.plfStale ?? 10_000;
  const plfUpdate = Math.max(plfStale / 2, 1000); // its default refresh period
  const nodeHolder =
    (method, options = {}) =>
    (p) =>
      Child.node('hold.mjs', [method, JSON.stringify(options), p]);
  const pyHolder = (p) => Child.python('hold.py', [p]);
  const soon = () => randInt(0, 20);
  const kernel = { n: s.kernelSamples, killDelay: soon };
  const cases = [];
  if (ctx.python) {
    cases.push(
      { ...kernel, name: FLOOR, role: 'floor', holder: pyHolder, wait: python },
      { ...kernel, name: 'python lockf waiter, ours holder (kernel)', role: 'info', holder: nodeHolder('ours'), wait: python },
      {
        ...kernel,
        name: 'ours lock() waiting, python holder',
        role: 'info',
        holder: pyHolder,
        wait: here((p) => waiting.ours(p)),
      },
    );
  }
  cases.push(
    { ...kernel, name: OURS, role: 'ours', holder: nodeHolder('ours'), wait: here((p) => waiting.ours(p)) },
    {
      ...kernel,
      name: 'ours tryLock() every 1 ms, ours holder (kernel)',
      role: 'info',
      holder: nodeHolder('ours'),
      wait: here(async (p) => {
        for (;;) {
          try {
            const held = await tryLock(p);
            return () => held.release();
          } catch (err) {
            if (err?.code !== 'ELOCKED') throw err;
            await sleep(1);
          }
        }
      }),
    },
    {
      ...kernel,
      name: 'fs-native-extensions waitForLock, its holder',
      role: 'peer',
      holder: nodeHolder('fsnx'),
      wait: here((p) => waiting.fsnx(p)),
    },
    {
      name: `${PLF}, stale ${plfStale} ms`,
      role: 'peer',
      n: s.plfSamples,
      holder: nodeHolder('plf', { stale: plfStale }),
      wait: here((p) => waiting.plf(p, { stale: plfStale })),
      killDelay: () => randInt(0, plfUpdate),
    },
  );
  const missing = await leaseMissing(join(dir, 'lease-probe.lock'));
  if (missing) notes.push(`lease rows skipped: ${missing}`);
  else {
    for (const [name, options] of [
      [LEASE, { backend: 'lease' }],
      [`${LEASE_SHORT} ${s.leaseStaleAfter} ms)`, { backend: 'lease', staleAfter: s.leaseStaleAfter }],
    ]) {
      cases.push({
        ...kernel,
        name,
        role: 'ours',
        holder: nodeHolder('ours', { backend: 'lease' }),
        wait: here((p) => waiting.ours(p, options)),
      });
    }
  }
  const rounds = Math.max(...cases.map((c) => c.n));
  ctx.log(
    `takeover: ${cases.length} cases, up to ${rounds} SIGKILLs each (proper-lockfile: ${s.plfSamples}, stale ${plfStale} ms)`,
  );
  let seq = 0;
  const samples = new Map(cases.map((c) => [c.name, []]));
  for (let r = 0; r < rounds; r++) {
    const active = cases.filter((c) => r < c.n).map((c) => ({ c, path: join(dir, `t${seq++}.lock`) }));
    for (const a of active) a.child = a.c.holder(a.path);
    await Promise.all(active.map((a) => a.child.expect('acquired', 60_000)));
    for (const a of active) samples.get(a.c.name).push(await sample(a.c, a.child, a.path));
  }
  notes.push(
    `proper-lockfile: stale ${plfStale} ms${s.plfStale ? ' (set for --quick; its default is 10000)' : ' (its default)'}, mtime refreshed every ${plfUpdate} ms; the kill lands at a random point of that refresh period`,
    "the time includes the killed holder's teardown (the kernel drops its locks after unmapping its memory): compare the python-holder and python-waiter rows",
    'lease holders record the default lease; the short-staleAfter row sets staleAfter on the waiter; a dead owner on this host is provably dead for both',
  );
  return {
    id,
    title: '4. Crash takeover after SIGKILL of the holder',
    unit: 'ms from SIGKILL to the (already waiting) waiter holding the lock',
    columns: [
      { key: 'n', label: 'n' },
      { key: 'median', label: 'median' },
      { key: 'p90', label: 'p90' },
      { key: 'max', label: 'max' },
    ],
    ratio: { key: 'median', floor: FLOOR, baseline: `${PLF}, stale ${plfStale} ms` },
    rows: cases.map((c) => ({ name: c.name, role: c.role, ...summarize(samples.get(c.name)) })),
    notes,
  };
}
