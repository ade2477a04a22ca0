// Metric 3: hand-off latency between two processes. Two children per method
// alternate: one holds, the other waits; the waiter is inside its waiting
// call for a random 5-55 ms ("blocked") before the holder notes the time and
// releases (issue 13's harness: ours waits with `timeout: 120000`); latency =
// waiter's acquisition time - holder's release call time, both
// CLOCK_MONOTONIC. CPU = the waiting process's process.cpuUsage() across its
// call per second waited. Methods are interleaved in blocks, and blocks of
// short holds (1-4 ms) are interleaved with them as a second situation.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Child } from '../lib/proc.mjs';
import { cdf, randInt, summarize } from '../lib/stats.mjs';

export const id = 'handoff';
export const FLOOR = 'python fcntl.lockf (blocking)';
export const OURS = 'ours lock() (kernel)';
export const FSNX = 'fs-native-extensions waitForLock';
export const PLF = 'proper-lockfile lock (retries 1..10 ms)';
/** What issue 13's harness passes to our lock(). */
export const OURS_OPTIONS = { backend: 'kernel', timeout: 120_000 };

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

/** The idle baseline: the waiter's process sleeping (no lock) for as long. */
async function sleepOnce(c, ms) {
  const waiter = c.pair[1 - c.holder];
  waiter.send(`sleep ${ms}`);
  const [wall, cpu] = await waiter.expect('slept');
  return { waitMs: Number(wall) / 1e6, cpuMs: Number(cpu) / 1000 };
}

const cpuPerSecond = (xs) => (1000 * xs.reduce((a, x) => a + x.cpuMs, 0)) / xs.reduce((a, x) => a + x.waitMs, 0);

export async function run(ctx) {
  const s = ctx.settings.handoff;
  const dir = join(ctx.dir, 'handoff');
  mkdirSync(dir);
  const cases = [
    ctx.python && { name: FLOOR, role: 'floor', spawn: (p) => Child.python('handoff.py', [p]) },
    { name: OURS, role: 'ours', spawn: (p) => Child.node('handoff.mjs', ['ours', p, JSON.stringify(OURS_OPTIONS)]) },
    { name: FSNX, role: 'peer', spawn: (p) => Child.node('handoff.mjs', ['fsnx', p]) },
    { name: PLF, role: 'peer', spawn: (p) => Child.node('handoff.mjs', ['plf', p]) },
  ].filter(Boolean);
  for (const [i, c] of cases.entries()) {
    const p = join(dir, `h${i}.lock`);
    c.pair = [c.spawn(p), c.spawn(p)];
    c.pair[0].send('hold');
    await c.pair[0].expect('held');
    c.holder = 0;
    c.short = [];
    c.blocked = [];
    c.idle = [];
  }
  const perBlock = Math.ceil(s.handoffs / s.blocks);
  const shortPerBlock = Math.ceil(s.shortHandoffs / s.blocks);
  ctx.log(
    `handoff: ${cases.length} methods x ${s.blocks} blocks x (${perBlock} blocked ${s.blockedMs.join('-')} ms + ${shortPerBlock} short ${s.holdMs.join('-')} ms) hand-offs`,
  );
  try {
    for (let b = 0; b < s.blocks; b++) {
      for (let k = 0; k < cases.length; k++) {
        const c = cases[(b + k) % cases.length];
        for (let i = 0; i < perBlock; i++) c.blocked.push(await handoffOnce(c, randInt(s.blockedMs[0], s.blockedMs[1])));
        for (let i = 0; i < shortPerBlock; i++) c.short.push(await handoffOnce(c, randInt(s.holdMs[0], s.holdMs[1])));
        // A few idle sleeps of the same lengths: the runtime's own cost of waking up.
        for (let i = 0; i < Math.ceil(perBlock / 4); i++)
          c.idle.push(await sleepOnce(c, randInt(s.blockedMs[0], s.blockedMs[1])));
      }
    }
  } finally {
    await Promise.all(cases.flatMap((c) => c.pair.map((child) => child.end())));
  }
  return {
    id,
    title: '3. Hand-off latency between two processes (waiter blocked for a while)',
    unit: "ms from the holder's release call to the waiter's acquisition; CPU = waiting process's user+sys CPU ms per second waited",
    columns: [
      { key: 'n', label: 'n' },
      { key: 'median', label: 'median' },
      { key: 'p90', label: 'p90' },
      { key: 'p99', label: 'p99' },
      { key: 'max', label: 'max' },
      { key: 'cpuLong', label: `CPU ms/s (${s.blockedMs.join('-')} ms waits)` },
      { key: 'cpuIdle', label: 'CPU ms/s sleeping as long' },
      { key: 'shortMedian', label: `median (${s.holdMs.join('-')} ms holds)` },
      { key: 'shortP99', label: `p99 (${s.holdMs.join('-')} ms holds)` },
    ],
    ratio: { key: 'median', floor: FLOOR, baseline: PLF },
    rows: cases.map((c) => ({
      name: c.name,
      role: c.role,
      ...summarize(c.blocked.map((x) => x.latencyMs)),
      cpuLong: cpuPerSecond(c.blocked),
      cpuIdle: cpuPerSecond(c.idle),
      shortMedian: summarize(c.short.map((x) => x.latencyMs)).median,
      shortP99: summarize(c.short.map((x) => x.latencyMs)).p99,
      cdf: cdf(c.blocked.map((x) => x.latencyMs)),
    })),
    notes: [
      `the waiter is inside its waiting call for a random ${s.blockedMs.join('-')} ms before the holder releases (issue 13's harness); ours: lock(p, ${JSON.stringify(OURS_OPTIONS)}); roles alternate; "sleeping as long" is the same waiting process idle in a timer (setTimeout, python time.sleep) for random ${s.blockedMs.join('-')} ms, no lock: the runtime's own cost of one wake-up; the last two columns are hand-offs after short holds, interleaved in the same blocks`,
    ],
  };
}
