/**
 * Moving a file or tree into a staging directory the way mv(1) does: `rename`
 * when it can; across filesystems (`EXDEV`), copy it to a hidden temporary
 * name inside the staging directory, fsync the copy, rename it to its final
 * name, fsync the directory, and only then remove the source (with the
 * removal routine of fsutil.ts). So a crash or a failure (a full disk) leaves
 * the source intact and never a half-copied file under its final name: at
 * most a hidden `.stage-*.tmp` inside the entry, which goes with the entry.
 *
 * The copy keeps permission bits, timestamps and (as root) ownership; a
 * symlink is copied as a symlink, never followed. It does not cross a mount
 * point inside the source (`EBUSY`), and refuses sockets, FIFOs and device
 * files (`ENOTSUP`: Node cannot create them) before anything is removed.
 */
import { constants as fsc } from 'node:fs';
import {
  access,
  chmod,
  copyFile,
  lchown,
  lstat,
  lutimes,
  mkdir,
  opendir,
  readlink,
  rename,
  symlink,
  utimes,
} from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { errnoOf, fenceOf, fsyncPath, osError, removeTree, Slicer, syncTree, type Fence } from './fsutil.js';

const root = process.getuid?.() === 0;

/** Copies `src` to `dst` (which must not exist), never following a symlink or entering a mount point. */
async function copyTree(src: string, dst: string, fence: Fence): Promise<void> {
  const st = await lstat(src);
  if (st.isDirectory()) {
    if (st.dev !== fence.dev || fence.mounts.has(src)) {
      throw osError('EBUSY', 'copy', src, 'a mount point inside the source; unmount it first');
    }
    await mkdir(dst, { mode: 0o700 });
    const dir = await opendir(src, { bufferSize: 32 });
    for await (const entry of dir) await copyTree(join(src, entry.name), join(dst, entry.name), fence);
  } else if (st.isFile()) {
    await copyFile(src, dst, fsc.COPYFILE_EXCL);
  } else if (st.isSymbolicLink()) {
    await symlink(await readlink(src), dst);
  } else {
    throw osError('ENOTSUP', 'copy', src, 'a socket, FIFO or device file cannot be copied across filesystems');
  }
  if (root) await lchown(dst, st.uid, st.gid);
  if (st.isSymbolicLink()) await lutimes(dst, st.atime, st.mtime);
  else {
    // copyFile and mkdir applied the umask: restore the exact bits (after chown, which clears set-id bits).
    await chmod(dst, st.mode & 0o7777);
    await utimes(dst, st.atime, st.mtime);
  }
}

/**
 * Moves `source` to `target` (a new name inside the staging directory
 * `dir`): rename, or copy-fsync-rename-remove across filesystems.
 *
 * @throws OS errors with `code` and `path`: of the rename; of the copy
 * (`ENOSPC`, `EBUSY`, `ENOTSUP`...: the source is intact and nothing is left
 * in `dir`); `EACCES` before copying when the source could not be removed
 * afterwards; of removing the source (the copy is then in place at `target`).
 */
export async function moveInto(source: string, target: string, dir: string): Promise<void> {
  try {
    await rename(source, target);
    return;
  } catch (err) {
    if (errnoOf(err) !== 'EXDEV') throw err;
  }
  // mv would copy, then fail to remove: refuse before copying instead.
  await access(dirname(source), fsc.W_OK | fsc.X_OK);
  const fence = fenceOf(source);
  const tmp = join(dir, `.stage-${randomBytes(6).toString('hex')}.tmp`);
  try {
    await copyTree(source, tmp, fence);
    const copied = await lstat(tmp);
    if (copied.isDirectory()) await syncTree(tmp);
    else if (copied.isFile()) await fsyncPath(tmp, false);
    await rename(tmp, target);
  } catch (err) {
    await removeTree(tmp, fenceOf(dir), new Slicer()).catch(() => undefined);
    throw err;
  }
  await fsyncPath(dir, true);
  await removeTree(source, fence, new Slicer());
}
