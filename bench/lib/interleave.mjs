// Round-robin measurement of per-operation cost: every round runs each case
// once (a batch of operations), starting from a different case each round so
// that no case always follows the same neighbour. Round 0 is a warm-up.
import { runFloor } from './proc.mjs';

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
      return out;
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
      return runFloor(bin, args(maxOps));
    },
  };
}

/** Runs `cases` round-robin; returns Map(name -> samples in µs). */
export async function interleave(cases, { rounds, warmup = 1, maxOps, budgetMs, minOps = 5 }) {
  const samples = new Map(cases.map((c) => [c.name, []]));
  for (let r = 0; r < warmup + rounds; r++) {
    for (let k = 0; k < cases.length; k++) {
      const c = cases[(r + k) % cases.length];
      const t = await c.round({ maxOps, budgetMs, minOps });
      if (r >= warmup) samples.get(c.name).push(...t);
    }
  }
  return samples;
}
