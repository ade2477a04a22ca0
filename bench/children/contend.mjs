// Contending child (metric 7): node contend.mjs <method> <lockPath> <counterPath>
//
// Prints "ready", then on "go <startNs> <endNs>" (CLOCK_MONOTONIC) loops from
// startNs until endNs: take the lock (waiting), read-increment-write the
// shared counter file inside the critical section, release. Prints
// "done {count, inWindow, waits}" (waits in ms). Methods: see lib/peers.mjs.
import { openSync, readSync, writeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { waiting } from '../lib/peers.mjs';
import { sleep } from '../lib/proc.mjs';
import { nowNs } from '../lib/stats.mjs';

const [method, path, counterPath] = process.argv.slice(2);
const acquire = waiting[method];
if (!acquire) throw new Error(`unknown method ${method}`);
const counter = openSync(counterPath, 'r+');
const buf = Buffer.alloc(16);

/** Read-increment-write: only correct under mutual exclusion. */
function bump() {
  readSync(counter, buf, 0, 16, 0);
  const next = Number(buf.toString('latin1').trim()) + 1;
  buf.write(`${String(next).padStart(15)}\n`, 'latin1');
  writeSync(counter, buf, 0, 16, 0);
}

const rl = createInterface({ input: process.stdin });
process.stdout.write('ready\n');
const [start, end] = (await new Promise((r) => rl.once('line', r))).split(' ').slice(1).map(Number);
rl.close();
await sleep(Math.max(0, (start - nowNs()) / 1e6));
let count = 0;
let inWindow = 0;
const waits = [];
while (nowNs() < end) {
  const t0 = nowNs();
  const release = await acquire(path);
  const t1 = nowNs();
  bump();
  await release();
  count++;
  if (t1 <= end) inWindow++;
  waits.push((t1 - t0) / 1e6);
}
process.stdout.write(`done ${JSON.stringify({ count, inWindow, waits })}\n`);
