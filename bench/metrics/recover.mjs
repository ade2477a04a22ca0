// Metric 6: recovery of a staging area full of abandoned entries. For each
// tree shape, every method gets a freshly built, identical tree (built by a
// mktree.mjs child, which also holds the live entries) and runs in a fresh
// recover.mjs child, which reports its time and peak RSS. Methods rotate.
import * as staging from '@x/staging';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Child } from '../lib/proc.mjs';

export const id = 'recover';
const METHODS = [
  { method: 'ours', role: 'ours', label: 'ours area.recover()' },
  { method: 'plain', role: 'floor', label: 'plain sync readdir+unlink loop (no locks)' },
  { method: 'fsnx', role: 'peer', label: 'sync loop on fs-native-extensions tryLock' },
];

export const rowName = (c, method) => `${METHODS.find((m) => m.method === method).label} — ${shape(c)}`;
const shape = (c) => (c.live ? `${c.stale / 1000}k stale + ${c.live / 1000}k live` : `${c.stale / 1000}k stale`);
const MB = 1024 * 1024;

/**
 * BENCH_RECOVER_CASES="stale:live,..." (and BENCH_RECOVER_REPS) replaces the
 * cases of the mode, for iterating on the sweep with small trees.
 */
function settings(ctx) {
  const s = ctx.settings.recover;
  const cases = process.env.BENCH_RECOVER_CASES;
  if (!cases) return s;
  return {
    cases: cases.split(',').map((c) => {
      const [stale, live = '0'] = c.split(':');
      return { stale: Number(stale), live: Number(live) };
    }),
    reps: Number(process.env.BENCH_RECOVER_REPS ?? s.reps),
  };
}

export async function run(ctx) {
  const s = settings(ctx);
  const title = '6. recover(): throughput and peak memory on abandoned entries';
  // BENCH_RECOVER_PEERS=1 runs the reference rows without ours (to test the harness).
  const peersOnly = process.env.BENCH_RECOVER_PEERS === '1';
  if (typeof staging.StagingArea !== 'function' && !peersOnly) {
    return { id, title, skipped: '@x/staging has no StagingArea export yet (docs/contract.md 4.2)', rows: [] };
  }
  const methods = typeof staging.StagingArea === 'function' ? METHODS : METHODS.filter((m) => m.method !== 'ours');
  const dir = join(ctx.dir, 'recover');
  mkdirSync(dir);
  const rows = [];
  const notes = [];
  let seq = 0;
  for (const c of s.cases) {
    const reps = c.stale >= 100_000 ? 1 : s.reps;
    ctx.log(`recover: ${shape(c)}: ${methods.length} methods x ${reps} rep(s)`);
    const results = new Map(methods.map((m) => [m.method, []]));
    for (let r = 0; r < reps; r++) {
      for (let k = 0; k < methods.length; k++) {
        const m = methods[(r + k) % methods.length];
        const root = join(dir, `t${seq++}`);
        const tree = Child.node('mktree.mjs', [root, c.stale, c.live]);
        const naming = await tree.expectJson('ready', 600_000);
        const child = Child.node('recover.mjs', [m.method, root, naming.lockPrefix, naming.dirPrefix]);
        const res = await child.expectJson('result', 600_000);
        await child.exit;
        await tree.end(120_000);
        rmSync(root, { recursive: true, force: true });
        results.get(m.method).push(res);
        const expectRemoved = m.method === 'plain' ? res.removed : c.stale;
        if (res.removed !== expectRemoved) {
          notes.push(
            `${m.label}, ${shape(c)}: removed ${res.removed} entries, expected ${expectRemoved} (live ${res.live}, errors ${res.errors})`,
          );
        }
      }
    }
    const entries = c.stale + c.live;
    const caseRows = methods.map((m) => {
      const rs = results.get(m.method);
      const ms = rs.map((x) => x.ms).sort((a, b) => a - b)[Math.floor((rs.length - 1) / 2)];
      return {
        name: rowName(c, m.method),
        role: m.role,
        method: m.method,
        entries,
        stale: c.stale,
        live: c.live,
        ms,
        rate: entries / (ms / 1000),
        removed: rs.at(-1).removed,
        rssGrowth: Math.max(...rs.map((x) => (x.maxRss - x.rssBefore) / MB)),
        maxRss: Math.max(...rs.map((x) => x.maxRss / MB)),
      };
    });
    const plain = caseRows.find((r) => r.method === 'plain');
    const fsnx = caseRows.find((r) => r.method === 'fsnx');
    for (const row of caseRows) {
      row.xPlain = row.rate / plain.rate;
      row.xFsnx = row.rate / fsnx.rate;
    }
    rows.push(...caseRows);
  }
  if (peersOnly && methods.length < METHODS.length) notes.push('BENCH_RECOVER_PEERS=1 without StagingArea: reference rows only');
  if (ctx.quick) notes.push('--quick: 1k stale entries only (the full run does 10k, 100k and 10k live + 10k stale)');
  notes.push(
    'an entry = a lock file + its staging directory (holding one 100-byte file); rate = entries scanned per second (median rep); RSS growth = peak RSS - RSS before the call',
    'the plain loop deletes live entries too: it is only the throughput reference',
  );
  return {
    id,
    title,
    unit: 'entries/s; ms; MB',
    columns: [
      { key: 'rate', label: 'entries/s' },
      { key: 'ms', label: 'ms' },
      { key: 'removed', label: 'removed' },
      { key: 'rssGrowth', label: 'RSS growth MB' },
      { key: 'maxRss', label: 'peak RSS MB' },
      { key: 'xPlain', label: 'x plain loop', ratio: true },
      { key: 'xFsnx', label: 'x fsnx loop', ratio: true },
    ],
    rows,
    notes,
  };
}
