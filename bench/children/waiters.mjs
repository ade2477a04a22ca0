// Pending-waits child (metric 5): node waiters.mjs <method> <shape> <waiters> <stats> <dir>
//
// Measures `fs.promises.stat` latency and event-loop delay in this process,
// first with nothing pending (baseline), then while <waiters> lock waits are
// pending on locks held by another process (a hold.mjs child). <shape> is
// "one" (every wait on one path) or "many" (one path per wait). Prints
// "result {json}". Methods: see lib/peers.mjs `waiting` (ours, fsnx, plf).
import { writeFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { waiting } from '../lib/peers.mjs';
import { Child, sleep } from '../lib/proc.mjs';

const [method, shape, waiters, stats, dir] = process.argv.slice(2);

const target = join(dir, 'stat-target');
writeFileSync(target, 'x');

async function measure(n) {
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  const lat = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await stat(target);
    lat.push(performance.now() - t0);
  }
  h.disable();
  return { lat, eldP99: h.percentile(99) / 1e6, eldMax: h.max / 1e6 };
}

const baseline = await measure(Number(stats));
const count = Number(waiters);
const paths = Array.from({ length: shape === 'one' ? 1 : count }, (_, i) => join(dir, `w${i}.lock`));
const holder = Child.node('hold.mjs', [method, '{}', ...paths]);
await holder.expect('acquired');
const acquire = waiting[method];
const pending = Array.from({ length: count }, (_, i) => acquire(paths[i % paths.length]).then((release) => release()));
await sleep(50); // let every wait settle
const loaded = await measure(Number(stats));
await holder.end();
await Promise.all(pending);
process.stdout.write(`result ${JSON.stringify({ baseline, loaded })}\n`);
