/*
 * xlock: the kernel-lock primitives of @x/core, against node_api.h only.
 *
 * Everything here is a thin, synchronous, non-blocking system call except
 * `wait`, which blocks on a thread of a small pool of our own (never libuv's
 * threadpool: four blocked waits there freeze every fs call in the process). Errors are
 * returned as negative errno values; the JS side turns them into coded errors,
 * which keeps this file small and the hot path free of error objects.
 *
 * Lock kind: Linux open-file-description locks (F_OFD_SETLK), which conflict
 * with classic POSIX fcntl locks (containers/storage, Python fcntl.lockf) and
 * between two descriptors of one process. Elsewhere flock(2). A lock type
 * with XL_FLOCK set asks for flock(2) on every platform (the `flock` backend:
 * flock(1) scripts, Python filelock), which Linux keeps apart from fcntl locks.
 */
#include "xlock.h"


napi_value make_int(napi_env env, int64_t v) {
  napi_value out;
  if (napi_create_int64(env, v, &out) != napi_ok) return NULL;
  return out;
}

/* Reads argument i as an int32; throws a TypeError naming it otherwise. */
int arg_int(napi_env env, napi_value *argv, size_t argc, size_t i,
                   const char *name, int32_t *out) {
  napi_valuetype t;
  if (i >= argc || napi_typeof(env, argv[i], &t) != napi_ok || t != napi_number) {
    char msg[96];
    snprintf(msg, sizeof msg, "xlock: expected `%s` to be a number", name);
    napi_throw_type_error(env, NULL, msg);
    return 0;
  }
  napi_get_value_int32(env, argv[i], out);
  return 1;
}

/* Reads argument i as a path into buf (PATH_BUF bytes). Returns 1, or 0
 * after throwing a TypeError (not a string, or an embedded NUL the kernel
 * would silently cut at), or -ENAMETOOLONG for a path the kernel would refuse
 * as too long anyway: too long is an OS error, like every backend reports it. */
int arg_path(napi_env env, napi_value *argv, size_t argc, size_t i,
                    char *buf) {
  size_t len = 0;
  napi_valuetype t;
  if (i >= argc || napi_typeof(env, argv[i], &t) != napi_ok || t != napi_string) {
    napi_throw_type_error(env, NULL, "xlock: expected `path` to be a string");
    return 0;
  }
  if (napi_get_value_string_utf8(env, argv[i], buf, PATH_BUF, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "xlock: `path` is not a readable string");
    return 0;
  }
  if (len + 4 >= PATH_BUF) {
    /* Nearly full: maybe cut (N-API never splits a UTF-8 sequence, so a cut
     * string can stop up to 3 bytes short). Ask for the whole length; PATH_MAX
     * counts the NUL, so 4095 bytes is the longest path the kernel takes. */
    size_t full = 0;
    if (napi_get_value_string_utf8(env, argv[i], NULL, 0, &full) != napi_ok || full > len)
      return -ENAMETOOLONG;
  }
  if (strlen(buf) != len) {
    napi_throw_type_error(env, NULL, "xlock: `path` contains NUL");
    return 0;
  }
  return 1;
}

static int set_flock(int fd, int type, int wait) {
  int op = type == XL_UNLOCK ? LOCK_UN : type == XL_SHARED ? LOCK_SH : LOCK_EX;
  return flock(fd, wait ? op : op | LOCK_NB);
}

int set_lock(int fd, int type, int wait) {
  if (type & XL_FLOCK) return set_flock(fd, type & ~XL_FLOCK, wait);
#if XLOCK_OFD
  struct flock fl;
  memset(&fl, 0, sizeof fl); /* whole file; l_pid must be 0 for OFD locks */
  fl.l_type = type == XL_UNLOCK ? F_UNLCK : type == XL_SHARED ? F_RDLCK : F_WRLCK;
  fl.l_whence = SEEK_SET;
  return fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl);
#else
  return set_flock(fd, type, wait);
#endif
}

/* Starts a helper thread (pool.c's waits, pidwatch.c)
 * with a 64 KiB stack and every signal blocked, so process-directed signals
 * (SIGINT, SIGCHLD...) never land on it; a thread unblocks what it needs
 * itself. 0 | an errno. */
int start_thread(pthread_t *thread, void *(*fn)(void *), void *arg) {
  return start_thread_sized(thread, fn, arg, 64 * 1024);
}

int start_thread_sized(pthread_t *thread, void *(*fn)(void *), void *arg, size_t stack) {
  pthread_attr_t attr;
  sigset_t all, old;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, stack);
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(thread, &attr, fn, arg);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  return rc;
}

static atomic_long test_gaps[XL_GAPS];

int test_gap(int which, int interruptible) {
  long gap = atomic_load(&test_gaps[which]);
  if (gap <= 0) return 0;
  struct timespec ts = {gap / 1000000000L, gap % 1000000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
    if (interruptible) return -EINTR;
  return 0;
}

/* setWaitTestGap(ns[, which]): tests only (test_gap; `which` XL_GAP_*,
 * default XL_GAP_WAIT). */
static napi_value js_test_gap(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t which = XL_GAP_WAIT;
  int64_t ns = 0;
  napi_valuetype t;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || napi_typeof(env, argv[0], &t) != napi_ok || t != napi_number) {
    napi_throw_type_error(env, NULL, "xlock: expected `ns` to be a number");
    return NULL;
  }
  napi_get_value_int64(env, argv[0], &ns);
  if (argc > 1 && !arg_int(env, argv, argc, 1, "which", &which)) return NULL;
  if (which < 0 || which >= XL_GAPS) {
    napi_throw_range_error(env, NULL, "xlock: unknown test gap");
    return NULL;
  }
  atomic_store(&test_gaps[which], (long)ns);
  return NULL;
}

/* open(path, flags, mode) -> fd | -errno. O_CLOEXEC always: a child must never
 * inherit (and so keep alive) a lock. */
static napi_value js_open(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  char path[PATH_BUF];
  int32_t flags, mode;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int pr = arg_path(env, argv, argc, 0, path);
  if (pr == 0 ||
      !arg_int(env, argv, argc, 1, "flags", &flags) ||
      !arg_int(env, argv, argc, 2, "mode", &mode))
    return NULL;
  if (pr < 0) return make_int(env, pr);
  int fd;
  do fd = open(path, flags | O_CLOEXEC, (mode_t)mode);
  while (fd < 0 && errno == EINTR);
  return make_int(env, fd < 0 ? -errno : fd);
}

/* setlk(fd, type) -> 0 | -errno (EAGAIN when held elsewhere). Never blocks. */
static napi_value js_setlk(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd, type;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!arg_int(env, argv, argc, 0, "fd", &fd) ||
      !arg_int(env, argv, argc, 1, "type", &type))
    return NULL;
  int r;
  do r = set_lock(fd, type, 0);
  while (r < 0 && errno == EINTR);
  if (r == 0) return make_int(env, 0);
  /* EACCES is POSIX's other spelling of "held by someone else". */
  return make_int(env, (errno == EACCES || errno == EWOULDBLOCK) ? -EAGAIN : -errno);
}

/* getlk(fd, type) -> 0 free, >0 holder pid (classic POSIX holder), -1 held by
 * an OFD/flock holder whose pid the kernel does not report, or -errno - 1. */
static napi_value js_getlk(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd, type;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!arg_int(env, argv, argc, 0, "fd", &fd) ||
      !arg_int(env, argv, argc, 1, "type", &type))
    return NULL;
#if XLOCK_OFD
  if (type & XL_FLOCK) return make_int(env, -EINVAL - 1); /* no query: see /proc/locks */
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = type == XL_SHARED ? F_RDLCK : F_WRLCK;
  fl.l_whence = SEEK_SET;
  if (fcntl(fd, F_OFD_GETLK, &fl) < 0) return make_int(env, -errno - 1);
  if (fl.l_type == F_UNLCK) return make_int(env, 0);
  return make_int(env, fl.l_pid > 0 ? fl.l_pid : -1);
#else
  /* flock has no query: probe with a non-blocking lock on our own descriptor. */
  int op = (type & ~XL_FLOCK) == XL_SHARED ? LOCK_SH : LOCK_EX;
  if (flock(fd, op | LOCK_NB) == 0) {
    flock(fd, LOCK_UN);
    return make_int(env, 0);
  }
  return make_int(env, errno == EWOULDBLOCK ? -1 : -errno - 1);
#endif
}

/* close(fd) -> 0 | -errno. Closing drops the lock. */
static napi_value js_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!arg_int(env, argv, argc, 0, "fd", &fd)) return NULL;
  /* No EINTR retry: on Linux the descriptor is gone even then. */
  return make_int(env, close(fd) < 0 && errno != EINTR ? -errno : 0);
}

#define FUSE_MAGIC 0x65735546UL

static int statfs_of(const char *path, struct statfs *sf) {
  int r;
  do r = statfs(path, sf);
  while (r < 0 && errno == EINTR);
  return r;
}

/* renameNoReplace(from, to) -> 0 | -errno (EEXIST when `to` exists). Publishes
 * a locked staging file under its final name in one step. */
static napi_value js_rename_noreplace(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  char from[PATH_BUF], to[PATH_BUF];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int pf = arg_path(env, argv, argc, 0, from), pt = pf == 0 ? 0 : arg_path(env, argv, argc, 1, to);
  if (pf == 0 || pt == 0) return NULL;
  if (pf < 0 || pt < 0) return make_int(env, -ENAMETOOLONG);
#if defined(__linux__) && defined(SYS_renameat2)
  if (syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, 1 /* RENAME_NOREPLACE */) == 0)
    return make_int(env, 0);
  if (errno != EINVAL && errno != ENOSYS) return make_int(env, -errno);
#endif
  /* Filesystems without RENAME_NOREPLACE. NFS (which refuses any rename
   * flag): link refuses an existing target and keeps the inode, so link +
   * unlink publishes the locked file atomically. FUSE (the high-level API:
   * bindfs, sshfs): there a new link can be another node with the same
   * inode number, which the lock on `from` does not cover, so a plain
   * rename after checking that `to` is free: it keeps the locked node, and
   * could replace only a file another creator made under the same name in
   * between (the sweep's fixed-name claims: another sweeper of the same
   * garbage). */
  struct statfs sf;
  if (statfs_of(from, &sf) == 0 && (unsigned long)sf.f_type == FUSE_MAGIC) {
    struct stat st;
    if (lstat(to, &st) == 0) return make_int(env, -EEXIST);
    if (errno != ENOENT) return make_int(env, -errno);
    if (rename(from, to) < 0) return make_int(env, -errno);
    return make_int(env, 0);
  }
  if (link(from, to) < 0) return make_int(env, -errno);
  if (unlink(from) < 0) return make_int(env, -errno);
  return make_int(env, 0);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"open", NULL, js_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setlk", NULL, js_setlk, NULL, NULL, NULL, napi_enumerable, NULL},
      {"getlk", NULL, js_getlk, NULL, NULL, NULL, napi_enumerable, NULL},
      {"verify", NULL, js_verify, NULL, NULL, NULL, napi_enumerable, NULL},
      {"take", NULL, js_take, NULL, NULL, NULL, napi_enumerable, NULL},
      {"unlinkHeld", NULL, js_unlink_held, NULL, NULL, NULL, napi_enumerable, NULL},
      {"close", NULL, js_close, NULL, NULL, NULL, napi_enumerable, NULL},
      {"renameNoReplace", NULL, js_rename_noreplace, NULL, NULL, NULL, napi_enumerable, NULL},
      {"wait", NULL, js_wait, NULL, NULL, NULL, napi_enumerable, NULL},
      {"cancel", NULL, js_cancel, NULL, NULL, NULL, napi_enumerable, NULL},
      {"watchPid", NULL, js_watch_pid, NULL, NULL, NULL, napi_enumerable, NULL},
      {"unwatchPid", NULL, js_unwatch_pid, NULL, NULL, NULL, napi_enumerable, NULL},
      {"trimWaitThreads", NULL, js_trim, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setWaitTestGap", NULL, js_test_gap, NULL, NULL, NULL, napi_enumerable, NULL},
      {"leasePublish", NULL, js_lease_publish, NULL, NULL, NULL, napi_enumerable, NULL},
      {"leaseRelease", NULL, js_lease_release, NULL, NULL, NULL, napi_enumerable, NULL},
      {"createTmpfile", NULL, js_create_tmpfile, NULL, NULL, NULL, napi_enumerable, NULL},
      {"reclaim", NULL, js_reclaim, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lookup", NULL, js_lookup, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sweep", NULL, js_sweep, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_value kind, abi;
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok)
    return NULL;
  if (napi_create_string_utf8(env, XLOCK_OFD ? "ofd" : "flock", NAPI_AUTO_LENGTH, &kind) != napi_ok)
    return NULL;
  napi_set_named_property(env, exports, "kind", kind);
  if (napi_create_int32(env, XLOCK_ABI, &abi) != napi_ok) return NULL;
  napi_set_named_property(env, exports, "abi", abi);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
