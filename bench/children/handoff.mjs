// Hand-off child (metric 3): node handoff.mjs <method> <path> [<options JSON>]
//
// Line protocol on stdin (one command at a time):
//   hold         take the lock (it is free) -> "held"
//   wait         -> "waiting", then blocks in the method's waiting acquire ->
//                   "acq <hrtime ns> <wait wall ns> <wait cpu µs>"
//   release <ms> sleep <ms>, note the time, release -> "rel <hrtime ns>"
//   sleep <ms>   the idle baseline: sleep <ms> (setTimeout) ->
//                "slept <wall ns> <cpu µs>"
// Times are process.hrtime.bigint(): CLOCK_MONOTONIC, comparable across
// processes. Methods: see lib/peers.mjs `waiting` (ours, fsnx, plf).
import { waiting } from '../lib/peers.mjs';
import { serveCommands } from '../lib/commands.mjs';

const [method, path, json] = process.argv.slice(2);
const options = json ? JSON.parse(json) : undefined;
const acquire = waiting[method];
if (!acquire) throw new Error(`unknown method ${method}`);
let release;
const out = (line) => process.stdout.write(`${line}\n`);

const commands = {
  async hold() {
    release = await acquire(path, options);
    out('held');
  },
  async wait() {
    out('waiting');
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    release = await acquire(path, options);
    const t1 = process.hrtime.bigint();
    const cpu = process.cpuUsage(cpu0);
    out(`acq ${t1} ${t1 - t0} ${cpu.user + cpu.system}`);
  },
  async sleep(ms) {
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    await new Promise((r) => setTimeout(r, Number(ms)));
    const wall = process.hrtime.bigint() - t0;
    const cpu = process.cpuUsage(cpu0);
    out(`slept ${wall} ${cpu.user + cpu.system}`);
  },
  async release(ms) {
    await new Promise((r) => setTimeout(r, Number(ms)));
    const t = process.hrtime.bigint();
    const r = release;
    release = undefined;
    await r();
    out(`rel ${t}`);
  },
};

serveCommands(commands, () => release?.());
