// Metric: locks across hosts on etcd (@x/etcd) against etcd's own
// `etcdctl lock`, through one local single-member etcd whose data directory
// is on the bench filesystem (so writes pay its fsync, as in production).
//
// - round trip: one put through the gateway after the same idle gap as a
//   hand-off (15-25 ms: etcd's and the client's threads are asleep, which
//   costs ~1 ms more than back-to-back puts), taken inside the hand-off loop
//   (the floor: a release is one write, a hand-off cannot beat it); also
//   back-to-back puts and ranges, for reference;
// - uncontended acquire+release: ours in a warm process; etcdctl lock
//   needs a process per lock, so its row includes process start, and the
//   `etcdctl put` row is that process floor;
// - two-process hand-off: from the holder's release call (ours) / the
//   SIGINT that makes `etcdctl lock` let go, to the waiter holding;
// - a SIGKILLed holder's lock back, from the kill to the waiter holding,
//   for several TTLs.
// Target: hand-off median within 1.5x the put round trip.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import http from 'node:http';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { Child } from '../lib/proc.mjs';
import { cdf, randInt, summarize } from '../lib/stats.mjs';

export const id = 'etcd';
const RTT = "etcd round trip: one put after a hand-off's idle gap";
const RTT_HOT = 'etcd round trip: one put, back to back';
const ETCDCTL_LOCK = 'etcdctl lock -- true (a process per lock)';

async function freePort() {
  const s = createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const { port } = s.address();
  s.close();
  await once(s, 'close');
  return port;
}

function which(cmd) {
  return new Promise((resolve) => {
    const p = spawn('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    p.once('exit', (code) => resolve(code === 0));
  });
}

async function startEtcd(dir) {
  const client = `http://127.0.0.1:${await freePort()}`;
  const peer = `http://127.0.0.1:${await freePort()}`;
  const proc = spawn(
    'etcd',
    [
      `--data-dir=${join(dir, 'data')}`,
      `--listen-client-urls=${client}`,
      `--advertise-client-urls=${client}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=default=${peer}`,
      '--logger=zap',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  await new Promise((resolve, reject) => {
    proc.stderr.setEncoding('utf8').on('data', (c) => {
      if (log.length < 100_000) log += c;
      if (log.includes('"msg":"serving client traffic')) resolve();
    });
    proc.once('exit', (code) => reject(new Error(`etcd exited (${code}):\n${log.slice(-2000)}`)));
  });
  return { client, stop: () => (proc.exitCode === null ? (proc.kill('SIGKILL'), once(proc, 'exit')) : undefined) };
}

const b64 = (s) => Buffer.from(s).toString('base64');

const agent = new http.Agent({ keepAlive: true });

/** One request through the gateway, the cheapest way Node has: node:http on a kept-alive connection, one write. */
function post(client, method, body) {
  const data = JSON.stringify(body);
  const url = new URL(client);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: url.hostname,
        port: url.port,
        path: `/v3/${method}`,
        method: 'POST',
        agent,
        headers: { 'content-length': Buffer.byteLength(data) },
      },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve(JSON.parse(Buffer.concat(chunks).toString('utf8'))));
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

/** How many keys start with `prefix` (a linearizable count). */
async function countKeys(client, prefix) {
  const end = Buffer.from(prefix);
  end[end.length - 1]++;
  const r = await post(client, 'kv/range', { key: b64(prefix), range_end: end.toString('base64'), count_only: true });
  return Number(r.count ?? 0);
}

async function until(check) {
  while (!(await check())) await new Promise((r) => setTimeout(r, 2));
}

/** Runs a command to its end; resolves its wall time in ms. */
async function timed(cmd, args) {
  const t0 = performance.now();
  const p = spawn(cmd, args, { stdio: 'ignore' });
  const [code] = await once(p, 'exit');
  if (code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${code}`);
  return performance.now() - t0;
}

/** An `etcdctl lock` holder process: resolves when it prints its key (it holds the lock). */
function etcdctlLock(client, name, ttl) {
  const c = new Child('etcdctl', [`--endpoints=${client}`, 'lock', ...(ttl ? [`--ttl=${ttl}`] : []), name], {
    env: { ...process.env, ETCDCTL_API: '3' },
  });
  return c;
}

export async function run(ctx) {
  if (!(await which('etcd')) || !(await which('etcdctl'))) {
    return { id, title: 'etcd: locks across hosts', skipped: 'etcd or etcdctl not installed (Debian: etcd-server, etcd-client)' };
  }
  const s = ctx.quick
    ? { rtt: 50, cycles: 50, etcdctl: 5, handoffs: 30, ttls: [2], kills: 1 }
    : { rtt: 300, cycles: 300, etcdctl: 20, handoffs: 150, ttls: [2, 5], kills: 3 };
  const dir = join(ctx.dir, 'etcd');
  mkdirSync(dir);
  const etcd = await startEtcd(dir);
  const children = [];
  const rows = [];
  try {
    const { client } = etcd;
    // Round trips.
    const put = [];
    const range = [];
    for (let i = 0; i < s.rtt; i++) {
      let t0 = performance.now();
      await post(client, 'kv/put', { key: b64('/bench/rtt'), value: b64(String(i)) });
      put.push(performance.now() - t0);
      t0 = performance.now();
      await post(client, 'kv/range', { key: b64('/bench/rtt') });
      range.push(performance.now() - t0);
    }
    rows.push({ name: RTT_HOT, role: 'info', ...summarize(put) });
    rows.push({ name: 'etcd round trip: one linearizable range', role: 'info', ...summarize(range) });
    ctx.log(`etcd: round trip put median ${summarize(put).median.toFixed(2)} ms`);

    // Uncontended.
    const one = Child.node('etcd-handoff.mjs', [client, '/bench/u/', 'u']);
    children.push(one);
    one.send(`cycle ${s.cycles}`);
    const tryMs = (await one.expect('cycle'))[0].split(',').map(Number);
    one.send(`lcycle ${s.cycles}`);
    const lockMs = (await one.expect('lcycle'))[0].split(',').map(Number);
    rows.push({ name: 'ours tryLock() + release()', role: 'ours', ...summarize(tryMs) });
    rows.push({ name: 'ours lock() + release()', role: 'ours', ...summarize(lockMs) });
    const ctlLock = [];
    const ctlPut = [];
    for (let i = 0; i < s.etcdctl; i++) {
      ctlLock.push(await timed('etcdctl', [`--endpoints=${client}`, 'lock', 'bench-u', '--', 'true']));
      ctlPut.push(await timed('etcdctl', [`--endpoints=${client}`, 'put', '/bench/p', 'x']));
    }
    rows.push({ name: ETCDCTL_LOCK, role: 'peer', ...summarize(ctlLock) });
    rows.push({ name: 'etcdctl put (its process floor)', role: 'info', ...summarize(ctlPut) });

    // Two-process hand-off, ours.
    const pair = [0, 1].map(() => Child.node('etcd-handoff.mjs', [client, '/bench/h/', 'h']));
    children.push(...pair);
    pair[0].send('hold');
    await pair[0].expect('held');
    let holder = 0;
    const ours = [];
    const releases = [];
    const cold = [];
    for (let i = 0; i < s.handoffs; i++) {
      const waiter = pair[1 - holder];
      waiter.send('wait');
      await waiter.expect('waiting');
      await until(async () => (await countKeys(client, '/bench/h/h/')) === 2);
      await new Promise((r) => setTimeout(r, randInt(15, 25)));
      const t0 = performance.now();
      await post(client, 'kv/put', { key: b64('/bench/rtt'), value: b64(String(i)) });
      cold.push(performance.now() - t0);
      await new Promise((r) => setTimeout(r, randInt(15, 25))); // the same idle gap before the release
      pair[holder].send('release');
      const [[rel, relNs], [acq]] = await Promise.all([pair[holder].expect('rel'), waiter.expect('acq')]);
      ours.push(Number(BigInt(acq) - BigInt(rel)) / 1e6);
      releases.push(Number(relNs) / 1e6);
      holder = 1 - holder;
    }
    rows.splice(0, 0, { name: RTT, role: 'floor', ...summarize(cold), cdf: cdf(cold) });
    rows.push({ name: 'ours hand-off (release() -> waiter holds)', role: 'ours', ...summarize(ours), cdf: cdf(ours) });
    rows.push({ name: "  the holder's release() meanwhile (one delete txn)", role: 'info', ...summarize(releases) });

    // Two-process hand-off, etcdctl lock (its keys live under the name).
    const ctl = [];
    let ctlHolder = etcdctlLock(client, 'bench-h');
    children.push(ctlHolder);
    await ctlHolder.next();
    for (let i = 0; i < Math.min(s.handoffs, 40); i++) {
      const waiter = etcdctlLock(client, 'bench-h');
      children.push(waiter);
      await until(async () => (await countKeys(client, 'bench-h/')) === 2);
      await new Promise((r) => setTimeout(r, randInt(2, 6)));
      const got = waiter.next();
      const t0 = performance.now();
      ctlHolder.proc.kill('SIGINT');
      await got;
      ctl.push(performance.now() - t0);
      await ctlHolder.exit;
      ctlHolder = waiter;
    }
    ctlHolder.proc.kill('SIGINT');
    await ctlHolder.exit;
    rows.push({ name: 'etcdctl lock hand-off (SIGINT -> waiter prints key)', role: 'peer', ...summarize(ctl), cdf: cdf(ctl) });
    ctx.log(`etcd: hand-off median ours ${summarize(ours).median.toFixed(2)} ms, etcdctl ${summarize(ctl).median.toFixed(2)} ms`);

    // A SIGKILLed holder's lock back, per TTL.
    const waiterOurs = Child.node('etcd-handoff.mjs', [client, '/bench/k/', 'k']);
    children.push(waiterOurs);
    for (const ttl of s.ttls) {
      const back = [];
      const backCtl = [];
      for (let i = 0; i < s.kills; i++) {
        const victim = Child.node('etcd-handoff.mjs', [client, '/bench/k/', 'k', ttl]);
        children.push(victim);
        victim.send('hold');
        await victim.expect('held');
        waiterOurs.send('wait');
        await waiterOurs.expect('waiting');
        await until(async () => (await countKeys(client, '/bench/k/k/')) === 2);
        const t0 = process.hrtime.bigint();
        victim.proc.kill('SIGKILL');
        const [acq] = await waiterOurs.expect('acq', 60_000);
        back.push(Number(BigInt(acq) - t0) / 1e6);
        waiterOurs.send('release');
        await waiterOurs.expect('rel');

        const v = etcdctlLock(client, 'bench-k', ttl);
        children.push(v);
        await v.next();
        const w = etcdctlLock(client, 'bench-k');
        children.push(w);
        await until(async () => (await countKeys(client, 'bench-k/')) === 2);
        const got = w.next(60_000);
        const t1 = performance.now();
        v.proc.kill('SIGKILL');
        await got;
        backCtl.push(performance.now() - t1);
        w.proc.kill('SIGINT');
        await w.exit;
      }
      rows.push({ name: `ours SIGKILLed holder back, TTL ${ttl} s`, role: 'ours', ...summarize(back) });
      rows.push({ name: `etcdctl lock --ttl=${ttl} SIGKILLed holder back`, role: 'peer', ...summarize(backCtl) });
    }
  } finally {
    for (const c of children) c.proc.kill('SIGKILL');
    await etcd.stop();
  }
  const rtt = rows.find((r) => r.name === RTT).median;
  const hot = rows.find((r) => r.name === RTT_HOT).median;
  const hand = rows.find((r) => r.name.startsWith('ours hand-off')).median;
  return {
    id,
    title: 'etcd: locks across hosts (@x/etcd vs etcdctl lock, one local etcd)',
    unit: 'ms; x floor = median / the put round trip',
    columns: [
      { key: 'n', label: 'n' },
      { key: 'median', label: 'median' },
      { key: 'p10', label: 'p10' },
      { key: 'p90', label: 'p90' },
      { key: 'max', label: 'max' },
    ],
    ratio: { key: 'median', floor: RTT, baseline: ETCDCTL_LOCK },
    rows,
    target: { handoffPerRtt: hand / rtt, met: hand <= 1.5 * rtt },
    notes: [
      `target: hand-off median within 1.5x one etcd round trip: ${(hand / rtt).toFixed(2)}x (${hand <= 1.5 * rtt ? 'met' : 'NOT met'}); ${(hand / hot).toFixed(2)}x a back-to-back put`,
      'the floor put is taken in the hand-off loop after the same idle gap as each release (a put after 20 ms idle costs ~1 ms more than back to back: sleeping etcd and client threads), with node:http on a kept-alive connection',
      'etcdctl lock needs a process per lock: its uncontended row includes process start, session grant and revoke (compare with its put row)',
      "etcdctl hand-off is measured from the SIGINT that makes the holder let go (it revokes its session), to the waiter's key on its stdout",
      'the x p-lockfile column here divides by the etcdctl lock row',
    ],
  };
}
