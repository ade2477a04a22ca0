// Small statistics helpers: quantiles by linear interpolation on sorted samples.

/** The q-quantile (0..1) of ascending `sorted`; NaN when empty. */
export function quantile(sorted, q) {
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

/** n, mean, min, p10, median, p90, p99, max of `samples` (any order). */
export function summarize(samples) {
  const s = Float64Array.from(samples).sort();
  let sum = 0;
  for (const v of s) sum += v;
  return {
    n: s.length,
    mean: s.length ? sum / s.length : NaN,
    min: s.length ? s[0] : NaN,
    p10: quantile(s, 0.1),
    median: quantile(s, 0.5),
    p90: quantile(s, 0.9),
    p99: quantile(s, 0.99),
    max: s.length ? s[s.length - 1] : NaN,
  };
}

/** Points of the empirical CDF, thinned to at most `points` entries: [[value, fraction], ...]. */
export function cdf(samples, points = 60) {
  const s = Float64Array.from(samples).sort();
  const out = [];
  if (s.length === 0) return out;
  const step = Math.max(1, Math.floor(s.length / points));
  for (let i = 0; i < s.length; i += step) out.push([s[i], (i + 1) / s.length]);
  out.push([s[s.length - 1], 1]);
  return out;
}

/** A uniformly random integer in [lo, hi]. */
export function randInt(lo, hi) {
  return lo + Math.floor(Math.random() * (hi - lo + 1));
}

/** `process.hrtime.bigint()` as a Number of nanoseconds (exact up to ~104 days of uptime). */
export function nowNs() {
  return Number(process.hrtime.bigint());
}
