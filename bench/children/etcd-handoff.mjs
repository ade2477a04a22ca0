// etcd hand-off child: node etcd-handoff.mjs <endpoints> <prefix> <name> [ttl]
//
// Line protocol on stdin, as children/handoff.mjs:
//   hold         take the lock (it is free) -> "held"
//   wait         -> "waiting <key-count-to-expect>", then lock() ->
//                   "acq <hrtime ns>"
//   release      note the time, release -> "rel <hrtime ns> <release duration ns>"
//   cycle <n>    n x (tryLock + release) uncontended -> "cycle <ms>,<ms>,..."
//   lcycle <n>   n x (lock + release) uncontended -> "lcycle <ms>,..."
import { EtcdLocks } from '@x/etcd';
import { serveCommands } from '../lib/commands.mjs';

const [endpoints, prefix, name, ttl] = process.argv.slice(2);
const locks = await EtcdLocks.connect({ endpoints, prefix, ttl: Number(ttl ?? 10) });
let held;
const out = (line) => process.stdout.write(`${line}\n`);

async function cycles(n, take) {
  const ms = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const h = await take(name);
    await h.release();
    ms.push((performance.now() - t0).toFixed(3));
  }
  return ms.join(',');
}

const commands = {
  async hold() {
    held = await locks.tryLock(name);
    out('held');
  },
  async wait() {
    out('waiting');
    held = await locks.lock(name);
    out(`acq ${process.hrtime.bigint()}`);
  },
  async release() {
    const t = process.hrtime.bigint();
    const h = held;
    held = undefined;
    await h.release();
    out(`rel ${t} ${process.hrtime.bigint() - t}`);
  },
  async cycle(n) {
    out(`cycle ${await cycles(Number(n), (x) => locks.tryLock(x))}`);
  },
  async lcycle(n) {
    out(`lcycle ${await cycles(Number(n), (x) => locks.lock(x))}`);
  },
};

serveCommands(commands, async () => {
  await held?.release();
  await locks.close();
});
