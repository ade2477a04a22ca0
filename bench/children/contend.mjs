// Contending child (metric 7): node contend.mjs <method> <lockPath> <counterPath> <n> [<options JSON>]
//
// Prints "ready", then on "go <startNs>" (CLOCK_MONOTONIC) takes the lock
// (waiting) <n> times: inside the critical section it reads the shared
// counter file and writes it back incremented (readFileSync + writeFileSync,
// as issue 13's harness does), then releases. Prints
// "done {count, waits, at, endNs}": waits in ms, `at` = each acquisition's
// time in µs after startNs. Methods: see lib/peers.mjs.
import { readFileSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { waiting } from '../lib/peers.mjs';
import { sleep } from '../lib/proc.mjs';
import { nowNs } from '../lib/stats.mjs';

const [method, path, counterPath, n, json] = process.argv.slice(2);
const acquire = waiting[method];
if (!acquire) throw new Error(`unknown method ${method}`);
const options = json ? JSON.parse(json) : undefined;

/** Read-increment-write: only correct under mutual exclusion. */
function bump() {
  writeFileSync(counterPath, String(Number(readFileSync(counterPath, 'latin1')) + 1));
}

const rl = createInterface({ input: process.stdin });
process.stdout.write('ready\n');
const start = Number((await new Promise((r) => rl.once('line', r))).split(' ')[1]);
rl.close();
await sleep(Math.max(0, (start - nowNs()) / 1e6));
const waits = [];
const at = [];
for (let i = 0; i < Number(n); i++) {
  const t0 = nowNs();
  const release = await acquire(path, options);
  const t1 = nowNs();
  bump();
  await release();
  waits.push((t1 - t0) / 1e6);
  at.push(Math.round((t1 - start) / 1e3));
}
process.stdout.write(`done ${JSON.stringify({ count: waits.length, waits, at, endNs: nowNs() })}\n`);
