/**
 * Real mounts for fault tests: a tmpfs (read-only, tiny, or with few inodes)
 * mounted on a fresh directory, always unmounted at scope end, and a child
 * process run as an unprivileged user. Mounting needs root (or CAP_SYS_ADMIN):
 * without it these tests skip and say why; under CI (`XLOCK_REQUIRE_TOOLS=1`)
 * they fail instead, like a missing tool.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { haveTools } from './tools.js';

/** The uid/gid an unprivileged child runs as (`nobody`). */
export const NOBODY = 65534;

let mountable: boolean | undefined;

/** Whether this process may mount a tmpfs (skips, or fails under CI, when not). */
export function canMount(): boolean {
  if (mountable === undefined) {
    const probe = mkdtempSync(join(tmpdir(), 'xlock-mnt-probe-'));
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=16k', 'tmpfs', probe], { encoding: 'utf8' });
    if (r.status === 0) spawnSync('umount', [probe]);
    rmSync(probe, { recursive: true, force: true });
    mountable = r.status === 0;
  }
  if (mountable) return true;
  const msg = 'cannot mount a tmpfs here (these tests need root)';
  if (process.env.XLOCK_REQUIRE_TOOLS === '1') throw new Error(msg);
  console.warn(`skipping: ${msg}`);
  return false;
}

/** Whether a child can run as `nobody` (root with setpriv). */
export function canDropPrivileges(): boolean {
  return haveTools('setpriv') && process.getuid?.() === 0;
}

/** A mounted tmpfs; unmounted (lazily if busy) and its mount point removed at scope end. */
export interface Mount {
  path: string;
  [Symbol.asyncDispose](): Promise<void>;
}

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr.trim()}`);
}

/**
 * Mounts a tmpfs with `options` (e.g. `size=64k`, `ro`, `nr_inodes=8`) on a
 * fresh directory under `parent` (default: the system temp dir), mode 0755.
 */
export function tmpfs(options: string, parent = tmpdir()): Mount {
  const path = mkdtempSync(join(parent, 'xlock-mnt-'));
  run('mount', ['-t', 'tmpfs', '-o', `mode=0755,${options}`, 'tmpfs', path]);
  return {
    path,
    [Symbol.asyncDispose]: async () => {
      const r = spawnSync('umount', [path]);
      if (r.status !== 0) spawnSync('umount', ['-l', path]);
      rmSync(path, { recursive: true, force: true });
    },
  };
}

/**
 * A FUSE mount of `source` (bindfs) on a fresh directory under the system
 * temp dir, unmounted at scope end: a filesystem without `O_TMPFILE`, like
 * most FUSE filesystems and NFS. Needs `bindfs` and `fusermount3` (CI
 * installs them) and the right to mount FUSE.
 */
export function bindfs(source: string): Mount {
  const path = mkdtempSync(join(tmpdir(), 'xlock-fuse-'));
  run('bindfs', [source, path]);
  return {
    path,
    [Symbol.asyncDispose]: async () => {
      const r = spawnSync('fusermount3', ['-u', path]);
      if (r.status !== 0) spawnSync('fusermount3', ['-uz', path]);
      rmSync(path, { recursive: true, force: true });
    },
  };
}

/**
 * A small ext4 filesystem in an image file, loop-mounted on a fresh
 * directory and unmounted (image deleted) at scope end. `mkfsArgs` go to
 * mkfs.ext4: `['-I', '128']` makes 128-byte inodes, which keep timestamps
 * in whole seconds.
 */
export function ext4Image(mkfsArgs: string[], parent = tmpdir()): Mount {
  const dir = mkdtempSync(join(parent, 'xlock-ext4-'));
  const image = join(dir, 'fs.img');
  const path = join(dir, 'mnt');
  try {
    run('truncate', ['-s', '16M', image]);
    run('mkfs.ext4', ['-q', '-F', ...mkfsArgs, image]);
    run('mkdir', [path]);
    run('mount', ['-o', 'loop', image, path]);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    path,
    [Symbol.asyncDispose]: async () => {
      const r = spawnSync('umount', [path]);
      if (r.status !== 0) spawnSync('umount', ['-l', path]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Remounts a mounted tmpfs read-only (after filling it with what a test needs). */
export function remountReadOnly(m: Mount): void {
  run('mount', ['-o', 'remount,ro', m.path]);
}

/** Fills the data blocks of the filesystem at `dir` until it reports ENOSPC (inodes stay free). */
export function fillBlocks(dir: string): void {
  try {
    writeFileSync(join(dir, 'filler'), Buffer.alloc(64 << 20));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  }
}

/** Uses up the inodes of the filesystem at `dir` (mount it with a small `nr_inodes`). */
export function fillInodes(dir: string): void {
  for (let i = 0; ; i++) {
    try {
      writeFileSync(join(dir, `f${i}`), '');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
      return;
    }
  }
}

/**
 * Runs `node --input-type=module -e <script> ...args` as `nobody` and returns its
 * stdout (trimmed). The script must not need files `nobody` cannot read.
 */
export function runAsNobody(
  script: string,
  args: string[],
  cwd: string,
): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(
    'setpriv',
    [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, '--input-type=module', '-e', script, ...args],
    { encoding: 'utf8', cwd },
  );
  return { status: r.status, stdout: r.stdout.trim(), stderr: r.stderr.trim() };
}

/** Makes `dir` traversable by others (tmp-promise creates 0700 directories). */
export function openUp(dir: string): void {
  chmodSync(dir, 0o755);
}
