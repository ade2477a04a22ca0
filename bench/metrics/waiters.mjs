// Metric 5: does waiting hurt the rest of the process? In a fresh child per
// (method, block), 200 sequential fs.promises.stat calls with nothing
// pending (baseline), then with 64 lock waits pending on locks held by
// another process; event-loop delay from perf_hooks.monitorEventLoopDelay.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Child } from '../lib/proc.mjs';
import { summarize } from '../lib/stats.mjs';

export const id = 'waiters';
export const BASELINE = 'no waiters (baseline, every child)';
export const OURS_ONE = 'ours lock(), 64 waits on one path';
export const OURS_MANY = 'ours lock(), 64 waits on 64 paths';

export async function run(ctx) {
  const s = ctx.settings.waiters;
  const dir = join(ctx.dir, 'waiters');
  mkdirSync(dir);
  const cases = [
    { name: OURS_ONE, role: 'ours', method: 'ours', shape: 'one' },
    { name: OURS_MANY, role: 'ours', method: 'ours', shape: 'many' },
    { name: 'fs-native-extensions waitForLock, 64 on one path', role: 'peer', method: 'fsnx', shape: 'one' },
    { name: 'fs-native-extensions waitForLock, 64 on 64 paths', role: 'peer', method: 'fsnx', shape: 'many' },
    { name: 'proper-lockfile lock (retries 1..10 ms), 64 on one path', role: 'peer', method: 'plf', shape: 'one' },
  ];
  ctx.log(`waiters: ${cases.length} cases x ${s.blocks} blocks, ${s.waiters} waits, ${s.stats} stats`);
  const base = { lat: [], eld: [], eldMax: [] };
  for (const c of cases) c.runs = [];
  let seq = 0;
  for (let b = 0; b < s.blocks; b++) {
    for (let k = 0; k < cases.length; k++) {
      const c = cases[(b + k) % cases.length];
      const sub = join(dir, `b${seq++}`);
      mkdirSync(sub);
      const child = Child.node('waiters.mjs', [c.method, c.shape, s.waiters, s.stats, sub]);
      const r = await child.expectJson('result', 120_000);
      await child.exit;
      c.runs.push(r.loaded);
      base.lat.push(...r.baseline.lat);
      base.eld.push(r.baseline.eldP99);
      base.eldMax.push(r.baseline.eldMax);
    }
  }
  const row = (name, role, lat, eld, eldMax) => {
    const st = summarize(lat);
    return {
      name,
      role,
      n: st.n,
      median: st.median,
      p99: st.p99,
      max: st.max,
      eldP99: Math.max(...eld),
      eldMax: Math.max(...eldMax),
    };
  };
  return {
    id,
    title: `5. ${s.waiters} pending waits in one process: fs.promises.stat latency and event-loop delay`,
    unit: 'ms; "x floor" = stat median / the no-waiter baseline median; event-loop delay p99/max: worst block',
    columns: [
      { key: 'n', label: 'stats' },
      { key: 'median', label: 'stat median' },
      { key: 'p99', label: 'stat p99' },
      { key: 'max', label: 'stat max' },
      { key: 'eldP99', label: 'loop delay p99' },
      { key: 'eldMax', label: 'loop delay max' },
    ],
    ratio: { key: 'median', floor: BASELINE },
    rows: [
      row(BASELINE, 'floor', base.lat, base.eld, base.eldMax),
      ...cases.map((c) =>
        row(
          c.name,
          c.role,
          c.runs.flatMap((r) => r.lat),
          c.runs.map((r) => r.eldP99),
          c.runs.map((r) => r.eldMax),
        ),
      ),
    ],
    notes: [
      'each (case, block) runs in a fresh child; baseline = the same child before its waits start; event-loop delay measured with a 1 ms resolution timer',
    ],
  };
}
