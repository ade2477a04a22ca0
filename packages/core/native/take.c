/*
 * take.c: the common case of taking a kernel lock, in one call from JS:
 * open (never following a symlink), lock without waiting, then the inode
 * check and the owner record (verify_record). A lock cycle is then one
 * call to take and one to close (src/internal/kernel.ts, lockKernelNow).
 */
#include "xlock.h"

/* take(path, flags, mode, type[, record, ours, same]) ->
 *   >= 0: (fd << 3) | status, fd left open: status 0 locked and checked
 *         (record written when given), 1 the file was replaced meanwhile,
 *         2 a lease file, 3 another program's file (verify_record), 4 held
 *         elsewhere (EAGAIN: the fd stays open, to wait on);
 *   < 0:  -(errno + step * TAKE_STEP), nothing left open; step 0 open,
 *         1 fcntl, 2 fstat (the check).
 * `flags` are open(2)'s (O_CLOEXEC is added); `type` set_lock()'s. */
#define TAKE_STEP 0x10000
napi_value js_take(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  char path[PATH_BUF];
  int32_t flags, mode, type, ours = 0, same = 0;
  void *data = NULL;
  size_t len = 0;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int pr = arg_path(env, argv, argc, 0, path);
  if (pr == 0 || !arg_int(env, argv, argc, 1, "flags", &flags) || !arg_int(env, argv, argc, 2, "mode", &mode) ||
      !arg_int(env, argv, argc, 3, "type", &type))
    return NULL;
  if (!arg_record(env, argv, argc, 4, &data, &len, &ours, &same)) return NULL;
  if (pr < 0) return make_int(env, pr);
  int fd;
  do fd = open(path, flags | O_CLOEXEC, (mode_t)mode);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return make_int(env, -errno);
  if (fd >= (1 << 27)) {
    close(fd);
    return make_int(env, -EMFILE);
  }
  int r;
  do r = set_lock(fd, type, 0);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    /* EACCES is POSIX's other spelling of "held by someone else". */
    if (errno == EACCES || errno == EWOULDBLOCK) return make_int(env, ((int64_t)fd << 3) | 4);
    int e = errno;
    close(fd);
    return make_int(env, -(e + TAKE_STEP));
  }
  int v = verify_record(fd, path, data, len, (size_t)ours, (size_t)same, 1);
  if (v < 0) {
    close(fd);
    return make_int(env, v - 2 * TAKE_STEP);
  }
  return make_int(env, ((int64_t)fd << 3) | v);
}
