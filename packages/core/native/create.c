/*
 * create.c: createLocked's create in one call (the protocol is described in
 * src/internal/kernel-create.ts and docs/staging-protocol.md):
 *
 *   an unnamed file (O_TMPFILE) in the directory, locked, holding our owner
 *   record, then linked under its final name (linkat never replaces). Nobody
 *   can open an unnamed file, so nobody can lock it before us: the file is
 *   locked and holds its record from the moment it has a name, with no
 *   temporary name to race on and nothing left by a crash.
 *
 * Where O_TMPFILE is not supported (NFS, most FUSE filesystems, old kernels)
 * or /proc is missing, it says so and the JS side creates under a hidden
 * name instead. A short metadata call on the calling thread, like the rest of
 * xlock.c.
 */
#include "xlock.h"

/* createTmpfile(dir, path, record, same, mode, flags) -> fd | -errno, or
 * -(XL_CREATE_LOCK + errno) when the lock failed, -(XL_CREATE_LINK + errno)
 * when the link did (so the caller names the step and the path in its error).
 * `dir` is the directory of `path`; `record` (a Buffer) is stamped in place
 * at `same` (stamp_record) and written whole, without the modification
 * time tag (no extra call; a later take of ours tags it, see record_tag); a
 * failed write does not fail the create (the record is informational, as in
 * verify_record). -EOPNOTSUPP: this filesystem or system cannot create this
 * way (create under a hidden name instead); -(XL_CREATE_LINK + EEXIST):
 * something is at `path` (try another name). On failure nothing is left:
 * the unnamed file is closed and so gone. flags & 1 (tests): link through
 * /proc/self/fd, as kernels before 6.10 need. */
napi_value js_create_tmpfile(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  char dir[PATH_BUF], path[PATH_BUF];
  void *data = NULL;
  size_t len = 0;
  int32_t same, mode, flags;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int pd = arg_path(env, argv, argc, 0, dir);
  int pp = pd == 0 ? 0 : arg_path(env, argv, argc, 1, path);
  if (pd == 0 || pp == 0) return NULL;
  if (argc < 3 || napi_get_buffer_info(env, argv[2], &data, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "xlock: expected `record` to be a Buffer");
    return NULL;
  }
  if (!arg_int(env, argv, argc, 3, "same", &same) || !arg_int(env, argv, argc, 4, "mode", &mode) ||
      !arg_int(env, argv, argc, 5, "flags", &flags))
    return NULL;
  if (same < 0 || (size_t)same > len) {
    napi_throw_range_error(env, NULL, "xlock: `same` must lie within the record");
    return NULL;
  }
  if (pd < 0) return make_int(env, -ENAMETOOLONG);
  if (pp < 0) return make_int(env, -(XL_CREATE_LINK + ENAMETOOLONG)); /* the name, not the dir */
  int fd = open_tmpfile(dir, O_RDWR, mode);
  if (fd < 0) return make_int(env, fd);
  int r;
  do r = set_lock(fd, XL_EXCLUSIVE, 0);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    r = -(XL_CREATE_LOCK + errno);
    close(fd);
    return make_int(env, r);
  }
  stamp_record(data, len, (size_t)same);
  (void)write_all(fd, data, len);
  r = link_tmpfile(fd, path, flags & 1);
  if (r < 0) {
    close(fd);
    return make_int(env, r == -EOPNOTSUPP ? r : -(XL_CREATE_LINK - r));
  }
  return make_int(env, fd);
}
