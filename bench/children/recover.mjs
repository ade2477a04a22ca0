// Recovery child (metric 6): node recover.mjs <method> <root> <lockPrefix> <dirPrefix>
//
// Reclaims the abandoned entries of a staging area and prints
// "result {ms, scanned, removed, live, errors, rssBefore, maxRss, cpuMs}"
// (bytes; cpuMs = user + system CPU of the call). Methods:
//   ours   StagingArea.open(root) + area.recover()
//   plain  a synchronous readdir + unlink/rmdir loop deleting everything
//          (no locking at all: the throughput reference)
//   fsnx   a hand-built synchronous loop: open each lock file, fs-native-
//          extensions tryLock, delete the entry's directory and lock file
//          when the lock was free
import fsnx from 'fs-native-extensions';
import { closeSync, constants as fsc, openSync, readdirSync, rmdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';

const [method, root, lockPrefix, dirPrefix] = process.argv.slice(2);

function removeDir(dir) {
  for (const name of readdirSync(dir)) unlinkSync(join(dir, name));
  rmdirSync(dir);
}

const methods = {
  async ours() {
    const { StagingArea } = await import('@x/staging');
    const area = await StagingArea.open(root);
    return () => area.recover();
  },
  async plain() {
    return () => {
      let scanned = 0;
      for (const e of readdirSync(root, { withFileTypes: true })) {
        scanned++;
        if (e.isDirectory()) removeDir(join(root, e.name));
        else unlinkSync(join(root, e.name));
      }
      return { scanned, removed: scanned, live: 0 };
    };
  },
  async fsnx() {
    return () => {
      let scanned = 0;
      let removed = 0;
      let live = 0;
      for (const e of readdirSync(root, { withFileTypes: true })) {
        const name = e.name;
        if (!e.isFile() || !name.startsWith(lockPrefix)) continue;
        scanned++;
        const lockPath = join(root, name);
        const fd = openSync(lockPath, fsc.O_RDWR | fsc.O_NOFOLLOW);
        try {
          if (!fsnx.tryLock(fd)) {
            live++;
            continue;
          }
          const dir = join(root, dirPrefix + name.slice(lockPrefix.length));
          try {
            removeDir(dir);
          } catch (err) {
            if (err.code !== 'ENOENT') throw err;
          }
          unlinkSync(lockPath);
          removed++;
        } finally {
          closeSync(fd);
        }
      }
      return { scanned, removed, live };
    };
  },
};

const prepare = methods[method];
if (!prepare) throw new Error(`unknown method ${method}`);
const go = await prepare();
const rssBefore = process.memoryUsage.rss();
const cpu0 = process.cpuUsage();
const t0 = performance.now();
const report = await go();
const ms = performance.now() - t0;
const cpu = process.cpuUsage(cpu0);
const maxRss = process.resourceUsage().maxRSS * 1024;
process.stdout.write(
  `result ${JSON.stringify({ ms, scanned: report.scanned, removed: report.removed, live: report.live, errors: report.errors?.length ?? 0, rssBefore, maxRss, cpuMs: (cpu.user + cpu.system) / 1000 })}\n`,
);
