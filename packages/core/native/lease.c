/*
 * lease.c: the lease backend's two hot steps, one call each (the protocol
 * is described in src/internal/lease.ts and docs/installing.md):
 *
 *   leasePublish: a new file holding its record appears under its name in
 *     one step, never empty: O_TMPFILE in the directory, write, linkat
 *     (no temporary name, nothing left by a crash).
 *     Where O_TMPFILE is not supported (NFS, most FUSE filesystems, old
 *     kernels) or /proc is missing, it says so and the JS side publishes
 *     through a temporary side file instead: the same protocol.
 *   leaseRelease: moves the lease file aside only while it is still ours,
 *     confirms what was moved, deletes it (or puts back a file that was not
 *     ours), and closes the descriptor.
 *
 * Both are short metadata calls made on the calling thread, like the rest of
 * xlock.c; errors are -errno.
 */
#include "xlock.h"

/* A record is one line of JSON well under a page. */
#define RECORD_BUF 8192

/* leasePublish(dir, path, record, mode, flags) -> fd (flags & 1: keep it
 * open) | 0 | -errno. flags & 2 (tests): link through /proc/self/fd, as
 * kernels before 6.10 need. `dir` is the directory of `path`. -EEXIST:
 * something is at `path`. -EOPNOTSUPP: this filesystem or system cannot
 * publish this way (O_TMPFILE unsupported: EOPNOTSUPP, or EISDIR/EINVAL from
 * kernels before 3.11; no /proc to link through): publish through a
 * temporary file. */
napi_value js_lease_publish(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  char dir[PATH_BUF], path[PATH_BUF], record[RECORD_BUF];
  size_t len = 0;
  int32_t mode, flags;
  napi_valuetype t;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int pd = arg_path(env, argv, argc, 0, dir);
  int pp = pd == 0 ? 0 : arg_path(env, argv, argc, 1, path);
  if (pd == 0 || pp == 0) return NULL;
  if (argc < 3 || napi_typeof(env, argv[2], &t) != napi_ok || t != napi_string) {
    napi_throw_type_error(env, NULL, "xlock: expected `record` to be a string");
    return NULL;
  }
  CHECK(napi_get_value_string_utf8(env, argv[2], record, sizeof record, &len));
  if (!arg_int(env, argv, argc, 3, "mode", &mode) || !arg_int(env, argv, argc, 4, "flags", &flags)) return NULL;
  if (pd < 0 || pp < 0) return make_int(env, -ENAMETOOLONG);
  if (len + 1 >= sizeof record) return make_int(env, -EMSGSIZE);
  int fd = open_tmpfile(dir, O_WRONLY, mode);
  if (fd < 0) return make_int(env, fd);
  if (write_all(fd, record, len) < 0) {
    int e = errno;
    close(fd);
    return make_int(env, -e);
  }
  int r = link_tmpfile(fd, path, flags & 2);
  if (r < 0) {
    close(fd);
    return make_int(env, r);
  }
  if (flags & 1) return make_int(env, fd);
  close(fd);
  return make_int(env, 0);
}

/* leaseRelease(fd, path, aside) -> 0 released | 1 not ours (nothing done) |
 * 2 taken over meanwhile (the file moved aside was not ours: put back) |
 * -errno. Closes `fd` in every case. "Ours": `path` is the inode open on
 * `fd` (same device and inode; it cannot be a reused inode number while we
 * hold it open). A file moved aside that is gone already was deleted by a
 * newcomer that took the free lease and reclaimed it (lease-sides.ts). */
napi_value js_lease_release(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  char path[PATH_BUF], aside[PATH_BUF];
  int32_t fd;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!arg_int(env, argv, argc, 0, "fd", &fd)) return NULL;
  int pp = arg_path(env, argv, argc, 1, path);
  int pa = pp == 0 ? 0 : arg_path(env, argv, argc, 2, aside);
  if (pp == 0 || pa == 0) return NULL;
  struct stat held, at;
  int r;
  if (pp < 0 || pa < 0) r = -ENAMETOOLONG;
  else if (fstat(fd, &held) < 0) r = -errno;
  else if (lstat(path, &at) < 0) r = errno == ENOENT ? 1 : -errno;
  else if (at.st_dev != held.st_dev || at.st_ino != held.st_ino) r = 1;
  else if ((void)test_gap(XL_GAP_LEASE, 0), rename(path, aside) < 0) r = errno == ENOENT ? 1 : -errno;
  else if (lstat(aside, &at) < 0) r = errno == ENOENT ? 0 : -errno;
  else if (at.st_dev != held.st_dev || at.st_ino != held.st_ino) {
    /* A takeover swapped files between our check and the rename. */
    if (link(aside, path) < 0) {
      /* a newcomer exists already */
    }
    unlink(aside);
    r = 2;
  } else r = unlink(aside) < 0 && errno != ENOENT ? -errno : 0;
  close(fd);
  return make_int(env, r);
}
