// Metric 7: N processes contending for one lock (a tight acquire / bump a
// shared counter / release loop). Acquisitions per second, waits, per-process
// counts (fairness), and the counter proving exclusion: its final value must
// equal the total number of acquisitions.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Child } from '../lib/proc.mjs';
import { nowNs, summarize } from '../lib/stats.mjs';

export const id = 'contend';
export const FLOOR = 'python fcntl.lockf (blocking)';
export const OURS = 'ours lock() (kernel)';
export const PLF = 'proper-lockfile lock (retries 1..10 ms)';

async function once(c, s, dir) {
  const lockPath = join(dir, 'contend.lock');
  const counterPath = join(dir, 'counter');
  writeFileSync(counterPath, `${'0'.padStart(15)}\n`);
  const children = Array.from({ length: s.procs }, () => c.spawn(lockPath, counterPath));
  try {
    await Promise.all(children.map((ch) => ch.expect('ready')));
    const start = nowNs() + 100e6;
    const end = start + s.seconds * 1e9;
    for (const ch of children) ch.send(`go ${start} ${end}`);
    const done = await Promise.all(children.map((ch) => ch.expectJson('done', s.seconds * 1000 + 60_000)));
    const total = done.reduce((a, d) => a + d.count, 0);
    const counter = Number(readFileSync(counterPath, 'latin1').trim());
    const counts = done.map((d) => d.inWindow);
    const mean = counts.reduce((a, x) => a + x, 0) / counts.length;
    return {
      rate: counts.reduce((a, x) => a + x, 0) / s.seconds,
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
  const node = (method) => (lockPath, counterPath) => Child.node('contend.mjs', [method, lockPath, counterPath]);
  const cases = [
    ctx.python && { name: FLOOR, role: 'floor', spawn: (l, c) => Child.python('contend.py', [l, c]) },
    { name: OURS, role: 'ours', spawn: node('ours') },
    { name: 'fs-native-extensions waitForLock', role: 'peer', spawn: node('fsnx') },
    { name: 'fs-native-extensions tryLock, else waitForLock', role: 'peer', spawn: node('fsnxTry') },
    { name: PLF, role: 'peer', spawn: node('plf') },
  ].filter(Boolean);
  ctx.log(`contend: ${cases.length} methods x ${s.rounds} rounds x ${s.seconds} s, ${s.procs} processes`);
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
    unit: 'acquisitions per second (all processes); waits in ms; fairness = fewest / mean acquisitions of a process (worst round)',
    columns: [
      { key: 'rate', label: 'acq/s' },
      { key: 'waitMedian', label: 'wait median' },
      { key: 'waitP99', label: 'wait p99' },
      { key: 'maxWait', label: 'max wait' },
      { key: 'fairness', label: 'fairness' },
      { key: 'counts', label: 'per-process (last round)' },
      { key: 'exclusive', label: 'counter = acquisitions' },
    ],
    ratio: { key: 'rate', floor: FLOOR, baseline: PLF },
    rows,
    notes: [
      `${s.rounds} round(s) of ${s.seconds} s per method, interleaved; each acquisition opens a fresh descriptor (python too); ratios here are throughput ratios (higher is better)`,
    ],
  };
}
