// Plain-text tables of a metric's result.
//
// A metric result looks like:
//   { id, title, unit, columns: [{ key, label }], rows: [{ name, role, ...values }],
//     ratio: { key, floor: <row name>, baseline: <row name> }, notes: [string], skipped?: string }
// `role` is 'floor' | 'ours' | 'peer' | 'info'. The ratio columns divide each row's
// `ratio.key` by the floor row's and by the baseline (proper-lockfile) row's.

/** Three significant digits, no exponent, thousands separated. */
export function fmt(v) {
  if (v === undefined || v === null || Number.isNaN(v)) return '-';
  if (typeof v === 'string') return v;
  if (typeof v === 'boolean') return v ? 'yes' : 'NO';
  const a = Math.abs(v);
  if (Number.isInteger(v) && a < 1000) return String(v);
  if (a >= 1000) return Math.round(v).toLocaleString('en-US');
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  if (a === 0) return '0';
  return v.toPrecision(2);
}

/** A ratio as `1.32x`. */
export function fmtRatio(r) {
  if (r === undefined || !Number.isFinite(r)) return '-';
  return `${r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2)}x`;
}

function ratioOf(rows, name, key, row) {
  const ref = name && rows.find((r) => r.name === name);
  if (!ref || !Number.isFinite(ref[key]) || ref[key] === 0 || !Number.isFinite(row[key])) return undefined;
  return row[key] / ref[key];
}

/** Adds `xFloor` / `xBaseline` to every row of `result` (in place) and returns it. */
export function addRatios(result) {
  const { key, floor, baseline } = result.ratio ?? {};
  if (!key) return result;
  for (const row of result.rows) {
    row.xFloor = ratioOf(result.rows, floor, key, row);
    row.xBaseline = ratioOf(result.rows, baseline, key, row);
  }
  return result;
}

/** Renders `result` as a text table (with its notes). */
export function renderTable(result) {
  const lines = [`\n== ${result.title} ==`];
  if (result.skipped) {
    lines.push(`  skipped: ${result.skipped}`);
    return lines.join('\n');
  }
  if (result.unit) lines.push(`   ${result.unit}`);
  const cols = [{ key: 'name', label: 'case' }, ...result.columns];
  const { key, floor, baseline } = result.ratio ?? {};
  if (key && floor) cols.push({ key: 'xFloor', label: `x floor`, ratio: true });
  if (key && baseline) cols.push({ key: 'xBaseline', label: `x p-lockfile`, ratio: true });
  const cells = result.rows.map((row) =>
    cols.map((c) =>
      c.key === 'name'
        ? `${row.role === 'floor' ? '* ' : row.role === 'ours' ? '> ' : '  '}${row.name}`
        : c.ratio
          ? fmtRatio(row[c.key])
          : fmt(row[c.key]),
    ),
  );
  const header = cols.map((c) => c.label);
  const width = cols.map((_, i) => Math.max(header[i].length, ...cells.map((r) => r[i].length)));
  const line = (r) => r.map((v, i) => (i === 0 ? v.padEnd(width[i]) : v.padStart(width[i]))).join('  ');
  lines.push(line(header), width.map((w) => '-'.repeat(w)).join('  '), ...cells.map(line));
  for (const note of result.notes ?? []) lines.push(`  note: ${note}`);
  return lines.join('\n');
}

/** The columns of a per-operation latency distribution (cycle metrics). */
export const distributionColumns = [
  { key: 'n', label: 'n' },
  { key: 'median', label: 'median' },
  { key: 'p90', label: 'p90' },
  { key: 'p99', label: 'p99' },
  { key: 'mean', label: 'mean' },
];
