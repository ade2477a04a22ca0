// Round-robin measurement of per-operation cost: every round runs each case
// once (a batch of operations), starting from a different case each round so
// that no case always follows the same neighbour. Round 0 is a warm-up.
//
// Two statistics per case and round: per-operation samples (for the
// distribution), and the batch mean: a case in this process runs the same
// number of operations again in a plain loop timed as a whole (no timer
// call per operation), which is how issue 13's harness measures "mean per
// op over interleaved rounds"; a C floor's batch mean is the mean of its
// per-operation samples (its timer costs tens of nanoseconds).
import { runFloor } from './proc.mjs';
import { summarize } from './stats.mjs';

/**
 * A case timed in this process, one sample per operation (µs).
 * `op` is called once per operation; `sync: true` calls it without `await`.
 */
export function nodeCase(name, op, { sync = false, role = 'peer', meta } = {}) {
  return {
    name,
    role,
    meta,
    async round({ maxOps, budgetMs, minOps }) {
      const out = [];
      const deadline = performance.now() + budgetMs;
      for (let i = 0; i < maxOps && (i < minOps || performance.now() < deadline); i++) {
        const t0 = performance.now();
        if (sync) op();
        else await op();
        out.push((performance.now() - t0) * 1000);
      }
      const n = out.length;
      const t0 = performance.now();
      if (sync) for (let i = 0; i < n; i++) op();
      else for (let i = 0; i < n; i++) await op();
      const batchMean = ((performance.now() - t0) * 1000) / n;
      return { samples: out, batchMean };
    },
  };
}

/** A case run by the C floor binary; `args(n)` builds its argv for n operations. */
export function floorCase(name, bin, args, { role = 'floor', meta } = {}) {
  return {
    name,
    role,
    meta,
    async round({ maxOps }) {
      const samples = await runFloor(bin, args(maxOps));
      return { samples, batchMean: samples.reduce((a, x) => a + x, 0) / samples.length };
    },
  };
}

/**
 * Runs `cases` round-robin; returns Map(name -> { samples, batchMeans }):
 * every per-operation sample (µs) and each round's batch mean (µs per op).
 */
export async function interleave(cases, { rounds, warmup = 1, maxOps, budgetMs, minOps = 5 }) {
  const out = new Map(cases.map((c) => [c.name, { samples: [], batchMeans: [] }]));
  for (let r = 0; r < warmup + rounds; r++) {
    for (let k = 0; k < cases.length; k++) {
      const c = cases[(r + k) % cases.length];
      const { samples, batchMean } = await c.round({ maxOps, budgetMs, minOps });
      if (r < warmup) continue;
      const o = out.get(c.name);
      o.samples.push(...samples);
      o.batchMeans.push(batchMean);
    }
  }
  return out;
}

/** A row's figures: the distribution of its samples, and `batchMean`, the median of its rounds' batch means. */
export function summarizeCase({ samples, batchMeans }) {
  const sorted = [...batchMeans].sort((a, b) => a - b);
  return { ...summarize(samples), batchMean: sorted[sorted.length >> 1] };
}
