#!/usr/bin/env node
// `pnpm bench [--quick] [--only=cycle,handoff,...] [--keep]`
//
// Measures @x/core / @x/staging and their peers in one run, interleaved, on
// one filesystem (a temp dir under os.tmpdir(), or under $BENCH_DIR), prints
// a table per metric and a targets section (issue 6), and writes
// bench/results/latest.{json,svg} (quick.* for --quick, partial.* with --only).
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildFloor, havePython, reapAll } from './lib/proc.mjs';
import { renderChart } from './lib/svg.mjs';
import { addRatios, renderTable } from './lib/table.mjs';
import { evaluateTargets, renderTargets } from './lib/targets.mjs';
import * as contend from './metrics/contend.mjs';
import * as create from './metrics/create.mjs';
import * as cycle from './metrics/cycle.mjs';
import * as handoff from './metrics/handoff.mjs';
import * as recover from './metrics/recover.mjs';
import * as takeover from './metrics/takeover.mjs';
import * as waiters from './metrics/waiters.mjs';

const metrics = [cycle, create, handoff, takeover, waiters, recover, contend];
metrics.push(await import('./metrics/etcd.mjs')); // issue 14

const SETTINGS = {
  quick: {
    cycle: { rounds: 6, maxOps: 300, budgetMs: 15, minOps: 5 },
    handoff: { handoffs: 60, shortHandoffs: 60, blocks: 2, blockedMs: [5, 55], holdMs: [1, 4] },
    takeover: { kernelSamples: 4, plfSamples: 2, plfStale: 2000, leaseStaleAfter: 1000 },
    waiters: { blocks: 1, stats: 200, waiters: 64 },
    recover: { cases: [{ stale: 1_000, live: 0 }], reps: 1 },
    contend: { procs: 4, rounds: 1, acquisitions: 500 },
    watchdogSeconds: 180,
  },
  full: {
    cycle: { rounds: 25, maxOps: 1000, budgetMs: 60, minOps: 5 },
    handoff: { handoffs: 400, shortHandoffs: 300, blocks: 5, blockedMs: [5, 55], holdMs: [1, 4] },
    takeover: { kernelSamples: 30, plfSamples: 3, plfStale: undefined, leaseStaleAfter: 1000 },
    waiters: { blocks: 5, stats: 200, waiters: 64 },
    recover: {
      cases: [
        { stale: 10_000, live: 0 },
        { stale: 100_000, live: 0 },
        { stale: 10_000, live: 10_000 },
      ],
      reps: 2,
    },
    contend: { procs: 4, rounds: 3, acquisitions: 500 },
    watchdogSeconds: 1800,
  },
};

const FS_TYPES = {
  0xef53: 'ext4',
  0x01021994: 'tmpfs',
  0x9123683e: 'btrfs',
  0x58465342: 'xfs',
  0x794c7630: 'overlayfs',
  0x6969: 'nfs',
  0x65735546: 'fuse',
};

function parseArgs(argv) {
  const o = { quick: false, keep: false, only: undefined };
  for (const a of argv) {
    if (a === '--quick') o.quick = true;
    else if (a === '--keep') o.keep = true;
    else if (a.startsWith('--only=')) o.only = a.slice(7).split(',');
    else if (a === '--help' || a === '-h') {
      console.log(
        'usage: node bench/run.mjs [--quick] [--only=<metric,...>] [--keep]\nmetrics: ' + metrics.map((m) => m.id).join(', '),
      );
      process.exit(0);
    } else {
      console.error(`unknown argument ${a}`);
      process.exit(64);
    }
  }
  if (o.only) {
    const bad = o.only.filter((id) => !metrics.some((m) => m.id === id));
    if (bad.length) {
      console.error(`unknown metric(s) ${bad.join(', ')}; known: ${metrics.map((m) => m.id).join(', ')}`);
      process.exit(64);
    }
  }
  return o;
}

function gitCommit() {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  } catch {
    return undefined;
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const started = performance.now();
  const base = process.env.BENCH_DIR || tmpdir();
  mkdirSync(base, { recursive: true });
  const dir = mkdtempSync(join(base, 'xlock-bench-'));
  const fsType = Number(statfsSync(dir).type) >>> 0;
  const meta = {
    date: new Date().toISOString(),
    mode: args.quick ? 'quick' : 'full',
    only: args.only,
    commit: gitCommit(),
    node: process.version,
    kernel: release(),
    cpus: `${cpus().length} x ${cpus()[0]?.model ?? '?'}`,
    loadavg: loadavg().map((l) => Number(l.toFixed(2))),
    dir,
    fs: FS_TYPES[fsType] ?? `0x${fsType.toString(16)}`,
  };
  const ctx = {
    quick: args.quick,
    dir,
    floorBin: buildFloor(dir),
    python: havePython(),
    settings: SETTINGS[args.quick ? 'quick' : 'full'],
    log: (msg) => process.stderr.write(`  [${((performance.now() - started) / 1000).toFixed(1).padStart(5)} s] ${msg}\n`),
  };
  console.log(`xlock bench (${meta.mode}) · node ${meta.node} · linux ${meta.kernel} · ${meta.cpus} · ${meta.fs} at ${dir}`);
  console.log('rows: "* " floor, "> " ours; ratios divide the stated statistic by the floor row\'s and by proper-lockfile\'s');
  if (!ctx.python) console.log('note: python3 with fcntl not found: the python floors are skipped');

  const results = {};
  let current = 'setup';
  // A metric that hangs (a lost child, a lock never granted) must not hang the run.
  const watchdog = setTimeout(() => {
    console.error(`\nwatchdog: no result after ${ctx.settings.watchdogSeconds} s (stuck in metric '${current}'); giving up`);
    reapAll();
    process.exit(1);
  }, ctx.settings.watchdogSeconds * 1000);
  watchdog.unref();
  try {
    for (const m of metrics) {
      if (args.only && !args.only.includes(m.id)) continue;
      current = m.id;
      const t0 = performance.now();
      const result = addRatios(await m.run(ctx));
      result.seconds = Number(((performance.now() - t0) / 1000).toFixed(1));
      results[m.id] = result;
      console.log(renderTable(result));
    }
  } finally {
    clearTimeout(watchdog);
    reapAll();
    if (!args.keep) rmSync(dir, { recursive: true, force: true });
  }
  const targets = evaluateTargets(results);
  console.log(renderTargets(targets));
  meta.seconds = Number(((performance.now() - started) / 1000).toFixed(1));
  meta.loadavgEnd = loadavg().map((l) => Number(l.toFixed(2)));

  const name = args.only ? 'partial' : args.quick ? 'quick' : 'latest';
  const outDir = fileURLToPath(new URL('./results/', import.meta.url));
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, `${name}.json`), `${JSON.stringify({ meta, results, targets }, null, 2)}\n`);
  writeFileSync(join(outDir, `${name}.svg`), renderChart({ meta, results }));
  console.log(`\nwrote bench/results/${name}.json and bench/results/${name}.svg (${meta.seconds} s)`);
}

process.on('SIGINT', () => {
  reapAll();
  process.exit(130);
});

main().catch((err) => {
  reapAll();
  console.error(err);
  process.exit(1);
});
