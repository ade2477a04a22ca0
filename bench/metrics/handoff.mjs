// Metric 3: hand-off latency between two processes. Two children per method
// alternate: one holds, the other waits; the holder sleeps a random 2-8 ms
// (so the waiter is settled in its wait), notes the time and releases;
// latency = waiter's acquisition time - holder's release call time, both
// CLOCK_MONOTONIC. Methods are interleaved in blocks. A final few long holds
// measure the waiter's CPU per second waited.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Child } from '../lib/proc.mjs';
import { cdf, randInt, summarize } from '../lib/stats.mjs';

export const id = 'handoff';
export const FLOOR = 'python fcntl.lockf (blocking)';
export const OURS = 'ours lock() (kernel)';
export const PLF = 'proper-lockfile lock (retries 1..10 ms)';

async function handoffOnce(c, holdMs) {
  const holder = c.pair[c.holder];
  const waiter = c.pair[1 - c.holder];
  waiter.send('wait');
  await waiter.expect('waiting');
  holder.send(`release ${holdMs}`);
  const [rel, acq] = await Promise.all([holder.expect('rel'), waiter.expect('acq')]);
  c.holder = 1 - c.holder;
  return {
    latencyMs: Number(BigInt(acq[0]) - BigInt(rel[0])) / 1e6,
    waitMs: Number(acq[1]) / 1e6,
    cpuMs: Number(acq[2]) / 1000,
  };
}

const cpuPerSecond = (xs) => (1000 * xs.reduce((a, x) => a + x.cpuMs, 0)) / xs.reduce((a, x) => a + x.waitMs, 0);

export async function run(ctx) {
  const s = ctx.settings.handoff;
  const dir = join(ctx.dir, 'handoff');
  mkdirSync(dir);
  const cases = [
    ctx.python && { name: FLOOR, role: 'floor', spawn: (p) => Child.python('handoff.py', [p]) },
    { name: OURS, role: 'ours', spawn: (p) => Child.node('handoff.mjs', ['ours', p]) },
    { name: 'fs-native-extensions waitForLock', role: 'peer', spawn: (p) => Child.node('handoff.mjs', ['fsnx', p]) },
    { name: PLF, role: 'peer', spawn: (p) => Child.node('handoff.mjs', ['plf', p]) },
  ].filter(Boolean);
  for (const [i, c] of cases.entries()) {
    const p = join(dir, `h${i}.lock`);
    c.pair = [c.spawn(p), c.spawn(p)];
    c.pair[0].send('hold');
    await c.pair[0].expect('held');
    c.holder = 0;
    c.short = [];
    c.long = [];
  }
  const perBlock = Math.ceil(s.handoffs / s.blocks);
  ctx.log(
    `handoff: ${cases.length} methods x ${s.blocks} blocks x ${perBlock} hand-offs, then ${s.longWaits} x ${s.longMs} ms waits each`,
  );
  try {
    for (let b = 0; b < s.blocks; b++) {
      for (let k = 0; k < cases.length; k++) {
        const c = cases[(b + k) % cases.length];
        for (let i = 0; i < perBlock; i++) c.short.push(await handoffOnce(c, randInt(s.holdMs[0], s.holdMs[1])));
      }
    }
    for (let j = 0; j < s.longWaits; j++) for (const c of cases) c.long.push(await handoffOnce(c, s.longMs));
  } finally {
    await Promise.all(cases.flatMap((c) => c.pair.map((child) => child.end())));
  }
  return {
    id,
    title: '3. Hand-off latency between two processes',
    unit: "ms from the holder's release call to the waiter's acquisition; CPU = waiter's user+sys CPU ms per second waited",
    columns: [
      { key: 'n', label: 'n' },
      { key: 'median', label: 'median' },
      { key: 'p90', label: 'p90' },
      { key: 'p99', label: 'p99' },
      { key: 'max', label: 'max' },
      { key: 'cpuLong', label: `CPU ms/s (${s.longMs} ms waits)` },
      { key: 'cpuShort', label: 'CPU ms/s (short waits)' },
    ],
    ratio: { key: 'median', floor: FLOOR, baseline: PLF },
    rows: cases.map((c) => ({
      name: c.name,
      role: c.role,
      ...summarize(c.short.map((x) => x.latencyMs)),
      cpuLong: cpuPerSecond(c.long),
      cpuShort: cpuPerSecond(c.short),
      cdf: cdf(c.short.map((x) => x.latencyMs)),
    })),
    notes: [
      `holds of ${s.holdMs[0]}-${s.holdMs[1]} ms (random) between hand-offs; roles alternate; CPU includes the acquire call itself, so short waits overstate it`,
    ],
  };
}
