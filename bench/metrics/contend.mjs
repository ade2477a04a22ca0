// Metric 7: N processes contending for one lock, each taking it a fixed number
// of times (issue 13's harness: 4 x 500, ours with `timeout: 120000`, a
// readFileSync + writeFileSync counter as the critical section).
// Acquisitions per second (total / time until the last process is done),
// waits, per-process shares (acquisitions of each process until the first one
// is done: fairness = fewest / mean), and the counter proving exclusion: its
// final value must equal the total number of acquisitions.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Child } from '../lib/proc.mjs';
import { nowNs, summarize } from '../lib/stats.mjs';

export const id = 'contend';
export const FLOOR = 'python fcntl.lockf (blocking)';
export const OURS = 'ours lock() (kernel)';
export const FSNX = 'fs-native-extensions waitForLock';
export const PLF = 'proper-lockfile lock (retries 1..10 ms)';
export const OURS_OPTIONS = { timeout: 120_000 };

async function once(c, s, dir) {
  const lockPath = join(dir, 'contend.lock');
  const counterPath = join(dir, 'counter');
  writeFileSync(counterPath, '0');
  const children = Array.from({ length: s.procs }, () => c.spawn(lockPath, counterPath, s.acquisitions));
  try {
    await Promise.all(children.map((ch) => ch.expect('ready')));
    const start = nowNs() + 100e6;
    for (const ch of children) ch.send(`go ${start}`);
    const done = await Promise.all(children.map((ch) => ch.expectJson('done', 300_000)));
    const total = done.reduce((a, d) => a + d.count, 0);
    const counter = Number(readFileSync(counterPath, 'latin1').trim());
    const elapsed = (Math.max(...done.map((d) => d.endNs)) - start) / 1e9;
    // Shares while everyone still contends: acquisitions until the first process is done.
    const firstDone = Math.min(...done.map((d) => d.at.at(-1)));
    const counts = done.map((d) => d.at.filter((t) => t <= firstDone).length);
    const mean = counts.reduce((a, x) => a + x, 0) / counts.length;
    return {
      rate: total / elapsed,
      waits: done.flatMap((d) => d.waits),
      counts,
      fairness: Math.min(...counts) / mean,
      exclusive: counter === total,
      total,
      counter,
    };
  } finally {
    await Promise.all(children.map((ch) => ch.end()));
  }
}

export async function run(ctx) {
  const s = ctx.settings.contend;
  const root = join(ctx.dir, 'contend');
  mkdirSync(root);
  const node =
    (method, options) =>
    (...args) =>
      Child.node('contend.mjs', [method, ...args, ...(options ? [JSON.stringify(options)] : [])]);
  const cases = [
    ctx.python && { name: FLOOR, role: 'floor', spawn: (...args) => Child.python('contend.py', args) },
    { name: OURS, role: 'ours', spawn: node('ours', OURS_OPTIONS) },
    { name: FSNX, role: 'peer', spawn: node('fsnx') },
    { name: 'fs-native-extensions tryLock, else waitForLock', role: 'peer', spawn: node('fsnxTry') },
    { name: PLF, role: 'peer', spawn: node('plf') },
  ].filter(Boolean);
  ctx.log(`contend: ${cases.length} methods x ${s.rounds} rounds, ${s.procs} processes x ${s.acquisitions} acquisitions`);
  const runs = new Map(cases.map((c) => [c.name, []]));
  let seq = 0;
  for (let r = 0; r < s.rounds; r++) {
    for (let k = 0; k < cases.length; k++) {
      const c = cases[(r + k) % cases.length];
      const dir = join(root, `r${seq++}`);
      mkdirSync(dir);
      runs.get(c.name).push(await once(c, s, dir));
    }
  }
  const rows = cases.map((c) => {
    const rs = runs.get(c.name);
    const w = summarize(rs.flatMap((x) => x.waits));
    return {
      name: c.name,
      role: c.role,
      rate: rs.reduce((a, x) => a + x.rate, 0) / rs.length,
      waitMedian: w.median,
      waitP99: w.p99,
      maxWait: w.max,
      fairness: Math.min(...rs.map((x) => x.fairness)),
      counts: rs.at(-1).counts.join('/'),
      exclusive: rs.every((x) => x.exclusive),
      total: rs.reduce((a, x) => a + x.total, 0),
      counter: rs.reduce((a, x) => a + x.counter, 0),
    };
  });
  return {
    id,
    title: `7. ${s.procs} processes contending for one lock`,
    unit: 'acquisitions per second (all processes); waits in ms; fairness = fewest / mean acquisitions of a process until the first is done (worst round)',
    columns: [
      { key: 'rate', label: 'acq/s' },
      { key: 'waitMedian', label: 'wait median' },
      { key: 'waitP99', label: 'wait p99' },
      { key: 'maxWait', label: 'max wait' },
      { key: 'fairness', label: 'fairness' },
      { key: 'counts', label: 'shares (last round)' },
      { key: 'exclusive', label: 'counter = acquisitions' },
    ],
    ratio: { key: 'rate', floor: FLOOR, baseline: PLF },
    rows,
    notes: [
      `${s.rounds} round(s) of ${s.procs} x ${s.acquisitions} acquisitions per method, interleaved; critical section = read the counter file, write it back + 1; each acquisition opens a fresh descriptor (python too); ours: lock(p, ${JSON.stringify(OURS_OPTIONS)}); ratios here are throughput ratios (higher is better)`,
    ],
  };
}
