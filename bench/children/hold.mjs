// Lock holder child: node hold.mjs <method> <optionsJson> <path> [path...]
//
// Takes the lock on every path without waiting (ours: tryLock(path, options);
// plf: proper-lockfile lock(path, { realpath: false, ...options }); fsnx:
// fs-native-extensions tryLock on a fresh descriptor), prints "acquired",
// holds until stdin reaches EOF, then releases everything and exits 0.
import { holding } from '../lib/peers.mjs';

const [method, json, ...paths] = process.argv.slice(2);
const options = JSON.parse(json);
const take = holding[method];
if (!take) throw new Error(`unknown method ${method}`);
const releases = [];
for (const p of paths) releases.push(await take(p, options));
process.stdout.write(`acquired ${process.pid}\n`);
process.stdin.resume();
process.stdin.on('end', async () => {
  for (const release of releases) await release();
  process.stdout.write('released\n');
  process.exit(0);
});
