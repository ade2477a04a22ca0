// Staging-area tree builder (metric 6): node mktree.mjs <root> <stale> <live>
//
// Builds <stale> abandoned entries (an unlocked lock file carrying a dead
// owner's record + a staging directory holding one small file) and <live>
// entries held by this process, then prints "ready {lockPrefix, dirPrefix}"
// and holds the live ones until stdin reaches EOF.
//
// Entry names: docs/contract.md 4.2 says `lock-<id>` + `<id>`. When @x/staging has a
// StagingArea, the naming is learnt from one `area.create()` instead (so the
// benchmark follows the implementation), and live entries are made with
// `area.create()`; otherwise live entries are `tryLockPath` + mkdir.
import * as staging from '@x/staging';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';

const [root, stale, live] = process.argv.slice(2);
mkdirSync(root, { recursive: true });

function commonSuffix(a, b) {
  let n = 0;
  while (n < a.length && n < b.length && a[a.length - 1 - n] === b[b.length - 1 - n]) n++;
  return n;
}

/** Learns `<lockPrefix><id>` / `<dirPrefix><id>` from one real entry. */
async function learn(area) {
  const before = new Set(readdirSync(root));
  const entry = await area.create();
  const dirName = basename(entry.path);
  const lockName = readdirSync(root).find((n) => !before.has(n) && n !== dirName);
  await entry.cleanup();
  const n = lockName ? commonSuffix(lockName, dirName) : 0;
  if (n < 6) {
    process.stderr.write(
      `mktree: cannot learn the entry naming from '${lockName}' / '${dirName}'; using docs/contract.md's lock-<id> / <id>\n`,
    );
    return { lockPrefix: 'lock-', dirPrefix: '' };
  }
  return { lockPrefix: lockName.slice(0, -n), dirPrefix: dirName.slice(0, -n) };
}

const area = typeof staging.StagingArea === 'function' ? await staging.StagingArea.open(root) : undefined;
const naming = area ? await learn(area) : { lockPrefix: 'lock-', dirPrefix: '' };
const held = [];
for (let i = 0; i < Number(live); i++) {
  if (area) {
    const entry = await area.create();
    held.push(() => entry.cleanup());
  } else {
    const id = `live${i.toString(36).padStart(6, '0')}`;
    const entry = await staging.tryLockPath(join(root, `${naming.lockPrefix}${id}`));
    mkdirSync(join(root, `${naming.dirPrefix}${id}`));
    held.push(() => entry.unlockAndDelete());
  }
}
const deadRecord = `${JSON.stringify({ v: 1, backend: 'kernel', pid: 2 ** 22 + 1, hostname: 'bench', createdAt: Date.now() })}\n`;
const payload = Buffer.alloc(100, 'x');
for (let i = 0; i < Number(stale); i++) {
  const id = `stale${i.toString(36).padStart(6, '0')}`;
  writeFileSync(join(root, `${naming.lockPrefix}${id}`), deadRecord);
  const dir = join(root, `${naming.dirPrefix}${id}`);
  mkdirSync(dir);
  writeFileSync(join(dir, 'data'), payload);
}
process.stdout.write(`ready ${JSON.stringify(naming)}\n`);
process.stdin.resume();
process.stdin.on('end', async () => {
  for (const release of held) await release();
  process.exit(0);
});
