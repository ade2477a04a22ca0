// The targets of issues 6 and 13, checked against one run's results.
import * as contend from '../metrics/contend.mjs';
import * as create from '../metrics/create.mjs';
import * as cycle from '../metrics/cycle.mjs';
import * as handoff from '../metrics/handoff.mjs';
import * as takeover from '../metrics/takeover.mjs';
import * as waiters from '../metrics/waiters.mjs';
import { fmt } from './table.mjs';

const row = (result, name) => result?.rows?.find((r) => r.name === name);
const rowStarting = (result, prefix) => result?.rows?.find((r) => r.name.startsWith(prefix));

/**
 * One target: `value` compared with `limit` (`at most` or `at least`).
 * `margin` is how far from the limit: < 1 = inside (PASS), > 1 = missed by that factor.
 */
function check(list, { metric, what, value, limit, atLeast = false, unit = '', detail }) {
  if (value === undefined || limit === undefined || !Number.isFinite(value)) {
    list.push({ metric, what, status: 'n/a', detail: detail ?? 'not measured in this run' });
    return;
  }
  const margin = atLeast ? limit / value : value / limit;
  list.push({
    metric,
    what,
    value,
    limit,
    atLeast,
    unit,
    status: (atLeast ? value >= limit : value <= limit) ? 'PASS' : 'MISS',
    margin,
    detail,
  });
}

export function evaluateTargets(results) {
  const t = [];
  const { cycle: c1, create: c2, handoff: c3, takeover: c4, waiters: c5, recover: c6, contend: c7 } = results;

  const ours1 = row(c1, cycle.OURS);
  const floor1 = row(c1, cycle.FLOOR);
  const plf1 = row(c1, cycle.PLF);
  check(t, {
    metric: 1,
    what: 'kernel cycle (async API) / C floor',
    value: ours1?.xFloor,
    limit: 1.5,
    unit: 'x',
    detail: ours1 && `${fmt(ours1.batchMean)} µs vs ${fmt(floor1.batchMean)} µs (mean/op, batch)`,
  });
  check(t, {
    metric: 1,
    what: 'proper-lockfile async cycle / ours',
    value: ours1 && plf1 ? plf1.batchMean / ours1.batchMean : undefined,
    limit: 50,
    atLeast: true,
    unit: 'x',
  });
  const lease1 = row(c1, cycle.LEASE);
  check(t, {
    metric: '1b',
    what: 'lease cycle / C floor',
    value: lease1?.xFloor,
    limit: 5,
    unit: 'x',
    detail: c1 && !lease1 ? 'lease backend not available yet' : undefined,
  });

  const ours2 = row(c2, create.OURS);
  const floor2 = row(c2, create.FLOOR);
  check(t, {
    metric: 2,
    what: 'createAndLock+unlockAndDelete / gap-free C floor',
    value: ours2?.xFloor,
    limit: 1.5,
    unit: 'x',
    detail: ours2 && `${fmt(ours2.batchMean)} µs vs ${fmt(floor2.batchMean)} µs (mean/op, batch)`,
  });

  const ours3 = row(c3, handoff.OURS);
  check(t, { metric: 3, what: 'hand-off median (kernel)', value: ours3?.median, limit: 0.15, unit: 'ms' });
  check(t, { metric: 3, what: 'hand-off p99 (kernel)', value: ours3?.p99, limit: 1, unit: 'ms' });
  const fsnx3 = row(c3, handoff.FSNX);
  check(t, {
    metric: 3,
    what: 'hand-off median / fs-native-extensions',
    value: ours3 && fsnx3 ? ours3.median / fsnx3.median : undefined,
    limit: 1,
    unit: 'x',
  });
  check(t, {
    metric: 3,
    what: 'waiter CPU per second waited / fs-native-extensions',
    value: ours3 && fsnx3 ? ours3.cpuLong / fsnx3.cpuLong : undefined,
    limit: 1,
    unit: 'x',
    detail: ours3 && fsnx3 && `${fmt(ours3.cpuLong)} ms/s vs ${fmt(fsnx3.cpuLong)} ms/s`,
  });

  const ours4 = row(c4, takeover.OURS);
  check(t, { metric: 4, what: 'crash takeover median (kernel)', value: ours4?.median, limit: 5, unit: 'ms' });
  const lease4 = row(c4, takeover.LEASE);
  check(t, {
    metric: 4,
    what: 'crash takeover median (lease, owner provably dead)',
    value: lease4?.median,
    limit: 10,
    unit: 'ms',
    detail: c4 && !lease4 ? 'lease backend not available yet' : undefined,
  });
  const short4 = rowStarting(c4, takeover.LEASE_SHORT);
  const staleAfter = short4 && Number(/staleAfter (\d+)/.exec(short4.name)?.[1]);
  check(t, {
    metric: 4,
    what: 'crash takeover max (lease, short staleAfter) <= staleAfter + one 100 ms poll',
    value: short4?.max,
    limit: staleAfter ? staleAfter + 100 : undefined,
    unit: 'ms',
    detail: c4 && !short4 ? 'lease backend not available yet' : undefined,
  });

  for (const name of [waiters.OURS_ONE, waiters.OURS_MANY]) {
    const r = row(c5, name);
    check(t, { metric: 5, what: `stat median / baseline (${name})`, value: r?.xFloor, limit: 1.5, unit: 'x' });
    check(t, { metric: 5, what: `event-loop delay p99 (${name})`, value: r?.eldP99, limit: 10, unit: 'ms' });
  }

  if (c6?.skipped || !c6) {
    t.push({
      metric: 6,
      what: 'recover throughput and memory',
      status: 'n/a',
      detail: c6?.skipped ?? 'not measured in this run',
    });
  } else {
    const ours6 = c6.rows.filter((r) => r.method === 'ours');
    if (!ours6.length)
      t.push({ metric: 6, what: 'recover throughput and memory', status: 'n/a', detail: 'no StagingArea: reference rows only' });
    for (const r of ours6) {
      const shape = r.name.split(' — ')[1];
      check(t, { metric: 6, what: `recover / plain loop (${shape})`, value: r.xPlain, limit: 0.3, atLeast: true, unit: 'x' });
      check(t, {
        metric: 6,
        what: `recover / fs-native-extensions loop (${shape})`,
        value: r.xFsnx,
        limit: 1,
        atLeast: true,
        unit: 'x',
      });
    }
    const small = ours6.find((r) => r.stale === 10_000 && !r.live);
    const big = ours6.find((r) => r.stale === 100_000 && !r.live);
    check(t, {
      metric: 6,
      what: 'recover memory growth 100k / 10k entries (independent of entries: <= 2x for 10x entries)',
      value: small && big ? big.rssGrowth / Math.max(small.rssGrowth, 1) : undefined,
      limit: 2,
      unit: 'x',
      detail: small && big ? `${fmt(big.rssGrowth)} MB vs ${fmt(small.rssGrowth)} MB` : 'needs the full run (100k entries)',
    });
  }

  const ours7 = row(c7, contend.OURS);
  check(t, {
    metric: 7,
    what: 'contention: acquisitions/s (4 processes)',
    value: ours7?.rate,
    limit: 5000,
    atLeast: true,
    unit: '/s',
  });
  const fsnx7 = row(c7, contend.FSNX);
  check(t, {
    metric: 7,
    what: 'contention: acquisitions/s / fs-native-extensions',
    value: ours7 && fsnx7 ? ours7.rate / fsnx7.rate : undefined,
    limit: 1,
    atLeast: true,
    unit: 'x',
  });
  check(t, { metric: 7, what: 'contention: max wait', value: ours7?.maxWait, limit: 20, unit: 'ms' });
  check(t, {
    metric: 7,
    what: 'contention: fewest / mean acquisitions of a process',
    value: ours7?.fairness,
    limit: 0.5,
    atLeast: true,
  });
  if (ours7) {
    t.push({
      metric: 7,
      what: 'contention: counter = acquisitions (exclusion)',
      status: ours7.exclusive ? 'PASS' : 'MISS',
      detail: `counter ${ours7.counter}, acquisitions ${ours7.total}`,
    });
  }
  return t;
}

/** A factor > 1 as a percentage below 2x, else as `2.5x`. */
const howFar = (f) => (f < 2 ? `${((f - 1) * 100).toFixed(f < 1.1 ? 1 : 0)}%` : `${fmt(f)}x`);

export function renderTargets(targets) {
  const lines = ['\n== targets (issues 6 and 13) =='];
  for (const x of targets) {
    let text = `  ${x.status.padEnd(4)}  [${x.metric}] ${x.what}`;
    if (x.value !== undefined) {
      const v = `${fmt(x.value)}${x.unit === 'x' ? 'x' : x.unit ? ` ${x.unit}` : ''}`;
      const lim = `${fmt(x.limit)}${x.unit === 'x' ? 'x' : x.unit ? ` ${x.unit}` : ''}`;
      const by = x.status === 'PASS' ? `headroom ${howFar(1 / x.margin)}` : `misses by ${howFar(x.margin)}`;
      text += `: ${v} (target ${x.atLeast ? '>=' : '<='} ${lim}; ${by})`;
    }
    if (x.detail) text += ` — ${x.detail}`;
    lines.push(text);
  }
  return lines.join('\n');
}
