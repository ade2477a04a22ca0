/**
 * createAndLock's ways of creating (docs/staging-protocol.md): an unnamed
 * O_TMPFILE file linked under its name (with AT_EMPTY_PATH, or through
 * /proc/self/fd as kernels before 6.10 need), or, where O_TMPFILE is missing,
 * a hidden name renamed. Each way: the file appears under its final name
 * already locked and holding our record, a taken name is retried with a
 * fresh one, and a failure leaves nothing behind. Then the fallback for real:
 * a FUSE filesystem without O_TMPFILE, and a process without /proc.
 */
import { createLocked, readOwner } from '@x/core';
import { hooks } from '@x/core/testing';
import { createAndLock, isLockError, type StagingLockFile } from '@x/staging';
import { spawnSync } from 'node:child_process';
import { lstatSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { holder, pyLockf, reapAll, start } from './helpers/child.js';
import { repoRoot } from './helpers/consumer.js';
import { bindfs, canMount } from './helpers/mounts.js';
import { straceNode } from './helpers/strace.js';
import { tempDir } from './helpers/tmp.js';
import { haveTools } from './helpers/tools.js';

afterEach(async () => {
  hooks.createNoTmpfile = undefined;
  hooks.createLinkViaProc = undefined;
  hooks.afterCreate = undefined;
  await reapAll();
});

/** The directory's entries, hidden ones included, but libfuse's own (`.fuse_hidden*`, see lease-protocol.test.ts). */
const entries = (dir: string): string[] =>
  readdirSync(dir)
    .filter((n) => !n.startsWith('.fuse_hidden'))
    .sort();

/** Settles `promise` and returns what it rejected with (fails if it resolved). */
async function rejection(promise: Promise<unknown>): Promise<NodeJS.ErrnoException> {
  return promise.then(
    (value) => {
      throw new Error(`expected a rejection, got ${String(value)}`);
    },
    (err: unknown) => err as NodeJS.ErrnoException,
  );
}

/**
 * What our one descriptor into `dir` names (/proc/self/fd): the path for a
 * file created under a name, `<dir>/#<inode> (deleted)` for one created
 * unnamed (O_TMPFILE), whatever was linked to it since.
 */
function heldName(dir: string): string {
  const targets = readdirSync('/proc/self/fd')
    .map((n) => {
      try {
        return readlinkSync(`/proc/self/fd/${n}`);
      } catch {
        return ''; // the descriptor readdir used
      }
    })
    .filter((t) => t.startsWith(`${dir}/`));
  expect(targets).toHaveLength(1);
  return targets[0]!;
}

/** The file is ours from the moment it has its name: locked (another process is refused at once) and naming us. */
async function expectHeldAndOurs(held: StagingLockFile): Promise<void> {
  const owner = await readOwner(held.path);
  expect(owner).toMatchObject({ backend: 'kernel', pid: process.pid });
  const other = await holder('tryLockPath', held.path);
  expect(other.first).toBe('error ELOCKED');
  expect(await other.child.finish()).toBe(3);
  const py = await pyLockf(held.path, 'try'); // a classic POSIX lock (podman's kind) conflicts too
  expect(py.first).toBe('busy');
  expect(await py.child.finish()).toBe(0);
}

const ways = [
  { way: 'O_TMPFILE, linked with AT_EMPTY_PATH', set: {}, unnamed: true },
  { way: 'O_TMPFILE, linked through /proc/self/fd', set: { createLinkViaProc: true }, unnamed: true },
  { way: 'a hidden name, as without O_TMPFILE', set: { createNoTmpfile: true }, unnamed: false },
];

describe.each(ways)('$way', ({ set, unnamed }) => {
  test('the file appears under its final name locked, holding our record; nothing else is left', async () => {
    await using d = await tempDir();
    Object.assign(hooks, set);
    const held = await createAndLock(d.path, 'lock-');
    // This way was taken: an unnamed file keeps the kernel's name for it.
    const ino = lstatSync(held.path).ino;
    expect(heldName(d.path)).toBe(unnamed ? `${d.path}/#${ino} (deleted)` : held.path);
    expect(entries(d.path)).toEqual([held.name]); // no hidden file
    expect(lstatSync(held.path).mode & 0o777).toBe(0o600);
    expect(lstatSync(held.path).nlink).toBe(1);
    await expectHeldAndOurs(held);
    await held.unlockAndDelete();
    expect(entries(d.path)).toEqual([]);
  });

  test('a taken name is retried with a fresh one; the file there is left alone', async () => {
    await using d = await tempDir();
    Object.assign(hooks, set);
    writeFileSync(join(d.path, 'lock-1'), 'theirs\n');
    const names = ['lock-1', 'lock-2'];
    const held = await createLocked(d.path, () => names.shift()!);
    expect(held.path).toBe(join(d.path, 'lock-2'));
    expect(names).toEqual([]);
    expect(readFileSync(join(d.path, 'lock-1'), 'utf8')).toBe('theirs\n');
    const py = await pyLockf(join(d.path, 'lock-1'), 'try'); // not locked by us
    expect(py.first).toBe('acquired');
    expect(await py.child.finish()).toBe(0);
    expect(entries(d.path)).toEqual(['lock-1', 'lock-2']);
    await held.release();
    expect(entries(d.path)).toEqual(['lock-1']);
  });

  test('every name taken: EEXIST after `attempts`, nothing created or deleted', async () => {
    await using d = await tempDir();
    Object.assign(hooks, set);
    writeFileSync(join(d.path, 'lock-1'), 'theirs\n');
    let calls = 0;
    const err = await rejection(createLocked(d.path, () => (calls++, 'lock-1'), { attempts: 3 }));
    expect(err.code).toBe('EEXIST');
    expect(err.path).toBe(d.path);
    expect(calls).toBe(3);
    expect(entries(d.path)).toEqual(['lock-1']);
    expect(readFileSync(join(d.path, 'lock-1'), 'utf8')).toBe('theirs\n');
  });

  test.each([300, 4090])('a name the kernel refuses (%i bytes): the error names it, at once, and nothing is left', async (n) => {
    await using d = await tempDir();
    Object.assign(hooks, set);
    const long = 'x'.repeat(n); // past NAME_MAX; past PATH_MAX with the dir
    let calls = 0;
    const err = await rejection(createLocked(d.path, () => (calls++, long)));
    expect(err.code).toBe('ENAMETOOLONG');
    expect(err.path).toBe(join(d.path, long));
    expect(err.syscall).toBe(unnamed ? 'link' : 'rename');
    expect(calls).toBe(1);
    expect(entries(d.path)).toEqual([]); // no orphan, no hidden file
  });

  test.each([
    ['missing', 'ENOENT', (dir: string) => join(dir, 'missing')],
    ['a file', 'ENOTDIR', (dir: string) => join(dir, 'keep')],
  ])('a dir that is %s: %s naming the dir, at once, nothing created', async (_what, code, bad) => {
    await using d = await tempDir();
    Object.assign(hooks, set);
    writeFileSync(join(d.path, 'keep'), 'keep\n');
    let calls = 0;
    const err = await rejection(createLocked(bad(d.path), () => `lock-${++calls}`));
    expect(err.code).toBe(code);
    expect(err.path).toBe(bad(d.path));
    expect(err.syscall).toBe('open');
    expect(isLockError(err)).toBe(false);
    expect(calls).toBe(1);
    expect(entries(d.path)).toEqual(['keep']);
  });
});

describe.runIf(haveTools('bindfs', 'fusermount3', 'python3'))('a FUSE filesystem without O_TMPFILE (bindfs)', () => {
  /** createAndLock in a bindfs mount, where the O_TMPFILE open fails; how many hidden files it made. */
  async function createInFuse(m: string): Promise<{ held: StagingLockFile; hidden: number }> {
    const tmpfile = spawnSync('python3', ['-c', 'import os,sys; os.open(sys.argv[1], os.O_TMPFILE | os.O_RDWR, 0o600)', m]);
    expect(tmpfile.status).not.toBe(0); // the kernel call we would have made fails here
    let hidden = 0;
    hooks.afterCreate = () => void hidden++;
    return { held: await createAndLock(m, 'lock-'), hidden };
  }

  test('createAndLock falls back to a hidden name: our record under the final name, nothing hidden left', async () => {
    await using d = await tempDir();
    await using m = bindfs(d.path);
    const { held, hidden } = await createInFuse(m.path);
    expect(hidden).toBe(1);
    expect(entries(m.path)).toEqual([held.name]);
    expect(await readOwner(held.path)).toMatchObject({ backend: 'kernel', pid: process.pid });
    await held.unlockAndDelete();
    expect(entries(m.path)).toEqual([]);
  });

  test('a taken name is retried there too; the file there is left alone', async () => {
    await using d = await tempDir();
    await using m = bindfs(d.path);
    writeFileSync(join(m.path, 'lock-1'), 'theirs\n');
    const names = ['lock-1', 'lock-2'];
    const held = await createLocked(m.path, () => names.shift()!);
    try {
      expect(held.path).toBe(join(m.path, 'lock-2'));
      expect(readFileSync(join(m.path, 'lock-1'), 'utf8')).toBe('theirs\n');
      expect(entries(m.path)).toEqual(['lock-1', 'lock-2']);
    } finally {
      await held.release();
    }
  });

  test.runIf(haveTools('strace'))(
    'O_TMPFILE is tried once per directory: later creates there go to the hidden name at once',
    async () => {
      await using d = await tempDir();
      await using m = bindfs(d.path);
      const script = `
import { createAndLock } from '@x/staging';
for (let i = 0; i < 3; i++) await (await createAndLock(process.argv[1], 'lock-')).unlockAndDelete();
`;
      const { lines } = straceNode('openat', script, [m.path]);
      expect(lines.filter((l) => l.includes('O_TMPFILE') && l.includes(m.path)).length).toBe(1);
      expect(lines.filter((l) => l.includes('.xlock-') && l.includes('O_EXCL')).length).toBe(3);
      expect(entries(m.path)).toEqual([]);
    },
  );

  // bindfs refuses RENAME_NOREPLACE (EINVAL). renameNoReplace's fallback
  // used to be link + unlink, which there gives the published name another
  // kernel node (libfuse's high-level API makes one per name) with the same
  // st_ino: the lock on the hidden name did not cover it, and no dev/ino
  // check could tell. The fallback is a rename after checking the name is
  // free, which keeps the locked node.
  test('the file is locked under its final name: another process is refused', async () => {
    await using d = await tempDir();
    await using m = bindfs(d.path);
    const { held } = await createInFuse(m.path);
    try {
      await expectHeldAndOurs(held);
    } finally {
      await reapAll(); // the child that got the lock, before the unmount
      await held.unlockAndDelete();
    }
  });
});

/** Run in a mount namespace of its own without /proc: the link through /proc/self/fd cannot work there. */
const withoutProc = `
import { hooks } from '@x/core/testing';
import { createAndLock } from '@x/staging';
let hidden = 0;
hooks.afterCreate = () => void hidden++;
hooks.createLinkViaProc = true;
const held = await createAndLock(process.argv[1], 'lock-');
console.log(JSON.stringify({ name: held.name, hidden }));
process.stdin.resume();
process.stdin.on('end', () => held.unlockAndDelete().then(() => console.log('released')));
`;

describe.runIf(haveTools('unshare', 'umount') && canMount())('a process without /proc', () => {
  test('linking through /proc/self/fd is impossible: createAndLock falls back to a hidden name, held', async () => {
    await using d = await tempDir();
    // Its own mount namespace, /proc unmounted there; node runs in the repository to find @x/*.
    const child = start('unshare', [
      '--mount',
      '--propagation',
      'private',
      'sh',
      '-c',
      'umount -l /proc && cd "$1" && exec "$0" --input-type=module -e "$2" "$3"',
      process.execPath,
      repoRoot,
      withoutProc,
      d.path,
    ]);
    const first = await child.line();
    const { name, hidden } = JSON.parse(first) as { name: string; hidden: number };
    expect(hidden).toBe(1);
    expect(entries(d.path)).toEqual([name]);
    const other = await holder('tryLockPath', join(d.path, name));
    expect(other.first).toBe('error ELOCKED');
    expect(await other.child.finish()).toBe(3);
    expect(await child.finish()).toBe(0);
    expect(entries(d.path)).toEqual([]);
  });
});
