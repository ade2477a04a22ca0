// A small hand-written SVG: (1) lock cycle cost per case, median bars with
// p10-p90 whiskers on a log axis; (2) hand-off latency CDFs per method.
import { fmt } from './table.mjs';

const W = 860;
const LABEL = 330;
const PLOT = W - LABEL - 40;
const ROLE_COLOR = { floor: '#8a8a8a', info: '#bdbdbd', ours: '#2b6cb0', peer: '#dd8a2e' };
const LINE_COLORS = ['#8a8a8a', '#2b6cb0', '#38a169', '#dd8a2e', '#c53030', '#6b46c1'];

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const text = (x, y, s, attrs = '') => `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" ${attrs}>${esc(s)}</text>`;

/** A log10 scale from [lo, hi] (decades) to [0, width]. */
function logScale(lo, hi, width) {
  const a = Math.floor(Math.log10(lo));
  const b = Math.ceil(Math.log10(hi));
  const f = (v) => ((Math.log10(Math.max(v, 10 ** a)) - a) / (b - a)) * width;
  f.decades = Array.from({ length: b - a + 1 }, (_, i) => 10 ** (a + i));
  return f;
}

function axis(x0, y0, height, scale, unit) {
  const out = [];
  for (const d of scale.decades) {
    const x = x0 + scale(d);
    out.push(`<line x1="${x.toFixed(1)}" y1="${y0}" x2="${x.toFixed(1)}" y2="${y0 + height}" stroke="#e2e2e2"/>`);
    out.push(text(x, y0 + height + 14, `${fmt(d)} ${unit}`, 'text-anchor="middle" class="small"'));
  }
  return out;
}

function cyclePanel(result, y0) {
  const rows = result.rows.filter((r) => Number.isFinite(r.median));
  const out = [text(20, y0, result.title + ' — µs per cycle, median and p10–p90, log scale', 'class="h"')];
  const top = y0 + 14;
  const rowH = 20;
  const scale = logScale(Math.min(...rows.map((r) => r.p10)), Math.max(...rows.map((r) => r.p90)), PLOT);
  const height = rows.length * rowH;
  out.push(...axis(LABEL, top, height, scale, 'µs'));
  rows.forEach((r, i) => {
    const y = top + i * rowH;
    const color = ROLE_COLOR[r.role] ?? ROLE_COLOR.peer;
    out.push(text(LABEL - 8, y + 14, r.name, `text-anchor="end" class="${r.role === 'ours' ? 'b' : ''}"`));
    out.push(
      `<rect x="${LABEL}" y="${y + 4}" width="${Math.max(1, scale(r.median)).toFixed(1)}" height="${rowH - 8}" fill="${color}"/>`,
    );
    const [a, b] = [LABEL + scale(r.p10), LABEL + scale(r.p90)];
    const m = y + rowH / 2;
    out.push(
      `<path d="M${a.toFixed(1)} ${m}H${b.toFixed(1)}M${a.toFixed(1)} ${m - 4}V${m + 4}M${b.toFixed(1)} ${m - 4}V${m + 4}" stroke="#333" fill="none"/>`,
    );
    out.push(text(Math.min(b + 6, W - 40), y + 14, fmt(r.median), 'class="small"'));
  });
  return { svg: out, bottom: top + height + 24 };
}

function handoffPanel(result, y0) {
  const rows = result.rows.filter((r) => r.cdf?.length);
  const out = [text(20, y0, result.title + ' — cumulative share of hand-offs (ms, log scale)', 'class="h"')];
  const top = y0 + 14;
  const height = 200;
  const x0 = 80;
  const width = W - x0 - 40;
  const all = rows.flatMap((r) => r.cdf.map(([v]) => v)).filter((v) => v > 0);
  const scale = logScale(Math.min(...all), Math.max(...all), width);
  out.push(...axis(x0, top, height, scale, 'ms'));
  for (const f of [0, 0.5, 0.9, 0.99, 1]) {
    const y = top + height - f * height;
    out.push(`<line x1="${x0}" y1="${y.toFixed(1)}" x2="${x0 + width}" y2="${y.toFixed(1)}" stroke="#eeeeee"/>`);
    out.push(text(x0 - 6, y + 4, `${Math.round(f * 100)}%`, 'text-anchor="end" class="small"'));
  }
  rows.forEach((r, i) => {
    const color = r.role === 'ours' ? ROLE_COLOR.ours : LINE_COLORS[(i + 2) % LINE_COLORS.length];
    const d = r.cdf
      .map(([v, f], j) => `${j ? 'L' : 'M'}${(x0 + scale(v)).toFixed(1)} ${(top + height - f * height).toFixed(1)}`)
      .join('');
    out.push(
      `<path d="${d}" stroke="${r.role === 'floor' ? ROLE_COLOR.floor : color}" stroke-width="${r.role === 'ours' ? 2.5 : 1.5}" fill="none"/>`,
    );
    const ly = top + 12 + i * 16;
    out.push(
      `<rect x="${x0 + width - 300}" y="${ly - 9}" width="12" height="4" fill="${r.role === 'floor' ? ROLE_COLOR.floor : color}"/>`,
    );
    out.push(text(x0 + width - 282, ly - 3, `${r.name}: median ${fmt(r.median)}, p99 ${fmt(r.p99)} ms`, 'class="small"'));
  });
  return { svg: out, bottom: top + height + 30 };
}

/** The chart for one run. */
export function renderChart({ meta, results }) {
  const parts = [];
  let y = 28;
  parts.push(
    text(
      20,
      y,
      `xlock bench (${meta.mode}) — ${meta.date.slice(0, 10)}, node ${meta.node}, ${meta.cpus}, ${meta.fs}`,
      'class="t"',
    ),
  );
  y += 30;
  for (const [key, panel] of [
    ['cycle', cyclePanel],
    ['handoff', handoffPanel],
  ]) {
    const r = results[key];
    if (!r || r.skipped) continue;
    const p = panel(r, y);
    parts.push(...p.svg);
    y = p.bottom + 20;
  }
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y}" viewBox="0 0 ${W} ${y}" font-family="system-ui, sans-serif" font-size="12">`,
    '<style>.t{font-size:15px;font-weight:600}.h{font-size:13px;font-weight:600}.small{font-size:10.5px;fill:#444}.b{font-weight:600}</style>',
    `<rect width="${W}" height="${y}" fill="#ffffff"/>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}
