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
  pthread_attr_t attr;
  sigset_t all, old;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 64 * 1024);
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

/* 0 when `fd`'s inode is the one at `path` (and, with `linked`, still
 * linked); 1 when it is not; -errno when fstat/lstat fail otherwise. `a`
 * receives fd's stat. */
static int held_at(int fd, const char *path, struct stat *a, int linked) {
  struct stat b;
  int r;
  /* EINTR: a filesystem (FUSE) that fails a call on a signal; no signal of
   * ours should arrive here (pool.c), but a check must not fail on one. */
  do r = fstat(fd, a);
  while (r < 0 && errno == EINTR);
  if (r < 0) return -errno;
  if (linked && a->st_nlink == 0) return 1;
  do r = lstat(path, &b);
  while (r < 0 && errno == EINTR);
  if (r < 0) return errno == ENOENT ? 1 : -errno;
  return a->st_dev == b.st_dev && a->st_ino == b.st_ino ? 0 : 1;
}

/* Whether the file starts like a lease backend's record: a lease holds no
 * kernel lock, so a kernel acquirer must judge it instead of taking the file
 * (docs/installing.md, "Mixing backends"). `head` is the file's first `n`
 * bytes (verify reads them once, only for a file that is not empty). */
static const char lease_prefix[] = "{\"v\":1,\"backend\":\"lease\"";
#define LEASE_PREFIX_LEN (sizeof lease_prefix - 1)
int is_lease_record(const char *head, size_t n) {
  return n >= LEASE_PREFIX_LEN && memcmp(head, lease_prefix, LEASE_PREFIX_LEN) == 0;
}

/* Writes the current time (ms since the epoch, CLOCK_REALTIME) over the 13
 * digits of `createdAt` at `same`, when they are there: a record is rendered
 * once and re-stamped at each write. */
void stamp_record(char *data, size_t len, size_t same) {
  if (same + 13 >= len) return;
  for (size_t i = same; i < same + 13; i++)
    if (data[i] < '0' || data[i] > '9') return;
  if (data[same + 13] >= '0' && data[same + 13] <= '9') return;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  if (ms < 1000000000000LL || ms > 9999999999999LL) return;
  for (size_t i = same + 13; i-- > same; ms /= 10) data[i] = (char)('0' + ms % 10);
}

/* The nanoseconds of the modification time a record's writer sets right
 * after writing it (its seconds: the current time): a value derived from
 * the record's naming bytes (pid, host, start time...), never 0. Any later
 * write, by anyone, sets the modification time to the current time, so a
 * file of the record's length whose nanoseconds still match was last
 * written by this holder, and a re-take need not read it (issue 13: "no
 * owner-record write is needed when the file already names us"). A
 * filesystem that keeps no nanoseconds (or a file we may not set times on)
 * never matches: the record is read, as before. A false match needs another
 * writer's timestamp to hit the same one of 999,999,999 values. The file's
 * device and inode number are part of it, so a time copied from a tagged
 * file onto another (touch -r, cp -p) does not match there. */
static long record_tag(const char *data, size_t same, const struct stat *st) {
  uint64_t h = 14695981039346656037ULL; /* FNV-1a */
  for (size_t i = 0; i < same; i++) {
    h ^= (unsigned char)data[i];
    h *= 1099511628211ULL;
  }
  /* And the file itself: a tagged time copied onto another file (touch -r,
   * cp -p) does not carry over. */
  uint64_t id[2] = {(uint64_t)st->st_dev, (uint64_t)st->st_ino};
  for (size_t i = 0; i < sizeof id; i++) {
    h ^= ((const unsigned char *)id)[i];
    h *= 1099511628211ULL;
  }
  long tag = 1 + (long)(h % 999999999ULL);
  /* Never a whole microsecond: times set from JS (a lease's heartbeat,
   * touch) are whole microseconds or milliseconds. */
  return tag % 1000 == 0 ? tag + 1 : tag;
}

/* Sets the modification time to now's seconds and `tag`'s nanoseconds.
 * Only the file's owner may set a time (EPERM otherwise): then there is no
 * tag, and the next take reads the record, as before. */
static void set_tag(int fd, long tag) {
  struct timespec now, ts[2] = {{0, UTIME_OMIT}, {0, tag}};
  clock_gettime(CLOCK_REALTIME, &now);
  ts[1].tv_sec = now.tv_sec;
  (void)futimens(fd, ts);
}

/* After a lock is granted: is the locked inode still linked and still the
 * one at `path`? The unlink race (docs/contract.md 3.3 item 2) hinges on this check.
 * Returns 0 | 1 (not the linked inode at path) | 2 (a lease file: nothing
 * written, the caller judges the lease) | 3 (foreign content: nothing
 * written) | -errno. When it is and a record is given (`data`, `len`), the
 * owner record goes into the file, using the size from the same fstat (no
 * separate stat per lock):
 *   - an empty file gets the record;
 *   - a file whose first `ours` bytes differ from the record's (not one of
 *     our records: podman's last-writer token, a pid file) is another
 *     program's: never written or truncated, and 3 tells the caller so;
 *   - a file that already holds this record up to byte `same` (the same
 *     holder: pid, host, start time) and has its length is left as it is
 *     (repeated acquisitions by one process cost no write);
 *   - else the record, stamped with the current time (stamp_record), is
 *     written with pwrite, then only a longer old record is truncated
 *     (truncating to the same size still costs a journalled inode update on
 *     ext4), so a concurrent reader sees the old record, the new one, or
 *     the new one with a tail it must tolerate.
 * The content check reads the file (pread) only when it is not empty and
 * its modification time does not carry this record's tag (record_tag). The
 * record is informational: a failed write (a full disk) does not fail the
 * lock. Called on the JS thread (verify(), take()) and on pool threads (a
 * wait given a path, wait.c). With `tag_it`, a record written (or found
 * ours but untagged) gets its tag (set_tag); a wait's grant passes 0, so
 * the hand-off between processes costs no extra call: the record is tagged
 * on this process's next take, if any. See docs/interop.md ("Foreign lock files"). */
int verify_record(int fd, const char *path, char *data, size_t len, size_t ours, size_t same, int tag_it) {
  struct stat a;
  int held = held_at(fd, path, &a, 1);
  if (held != 0) return held;
  long tag = data != NULL ? record_tag(data, same, &a) : 0;
  /* Last written by this holder (see record_tag): nothing to read. */
  if (data != NULL && a.st_size == (off_t)len && a.st_mtim.tv_nsec == tag) return 0;
  if (a.st_size > 0) {
    /* One pread of the head serves both checks (lease, foreign/same). */
    char head[512];
    size_t want = len > LEASE_PREFIX_LEN ? len : LEASE_PREFIX_LEN;
    if (want > sizeof head) want = sizeof head;
    ssize_t r;
    do r = pread(fd, head, want, 0);
    while (r < 0 && errno == EINTR);
    if (r < 0) return 0; /* unreadable (write-only): leave it */
    if (is_lease_record(head, (size_t)r)) return 2;
    if (data != NULL) {
      if ((size_t)r < ours || memcmp(head, data, ours) != 0) return 3;
      if (a.st_size == (off_t)len && same <= (size_t)r && memcmp(head, data, same) == 0) {
        /* Ours, untagged (a wait's grant wrote it): tag it once. Not where
         * the time kept has no nanoseconds below a microsecond (seconds-
         * only filesystems, FAT...): a tag never holds there. */
        if (tag_it && a.st_mtim.tv_nsec % 1000 != 0) set_tag(fd, tag);
        return 0;
      }
    }
  }
  if (data != NULL) {
    stamp_record(data, len, same);
    ssize_t w;
    do w = pwrite(fd, data, len, 0);
    while (w < 0 && errno == EINTR);
    if (w == (ssize_t)len && a.st_size > (off_t)len) {
      int t;
      do t = ftruncate(fd, (off_t)len);
      while (t < 0 && errno == EINTR);
    }
    if (w == (ssize_t)len && tag_it) set_tag(fd, tag);
  }
  return 0;
}

/* Unnamed files (lease.c, create.c): see xlock.h. */
#ifdef O_TMPFILE
int open_tmpfile(const char *dir, int flags, int mode) {
  int fd;
  do fd = open(dir, O_TMPFILE | flags | O_CLOEXEC, (mode_t)mode);
  while (fd < 0 && errno == EINTR);
  if (fd >= 0) return fd;
  /* EISDIR/EINVAL: kernels before 3.11, which do not know the flag. */
  if (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL) return -EOPNOTSUPP;
  return -errno;
}
#else
int open_tmpfile(const char *dir, int flags, int mode) { return -EOPNOTSUPP; }
#endif

int write_all(int fd, const char *buf, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pwrite(fd, buf + done, len - done, (off_t)done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (n == 0) {
      errno = EIO;
      return -1;
    }
    done += (size_t)n;
  }
  return 0;
}

/* Whether linkat(fd, "", ..., AT_EMPTY_PATH) links an O_TMPFILE file here:
 * since Linux 6.10 for a file the process opened itself, before only with
 * CAP_DAC_READ_SEARCH (ENOENT otherwise). Cleared the first time it fails
 * where /proc/self/fd works; it saves /proc's path lookup (a third of the
 * link's cost). */
static atomic_int empty_path_links = 1;

int link_tmpfile(int fd, const char *path, int via_proc) {
  if (!via_proc && atomic_load(&empty_path_links)) {
    if (linkat(fd, "", AT_FDCWD, path, AT_EMPTY_PATH) == 0) return 0;
    if (errno != ENOENT) return -errno;
  }
  char self[64];
  snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
  if (linkat(AT_FDCWD, self, AT_FDCWD, path, AT_SYMLINK_FOLLOW) == 0) {
    if (!via_proc) atomic_store(&empty_path_links, 0);
    return 0;
  }
  /* ENOENT: the directory went away, or there is no /proc to link through. */
  if (errno == ENOENT && access("/proc/self/fd", X_OK) < 0) return -EOPNOTSUPP;
  return -errno;
}

/* Reads the optional owner record at argv[i..i+2] (record Buffer, ours,
 * same): 1 (data stays NULL when argv[i] is missing or undefined), or 0
 * after throwing. */
int arg_record(napi_env env, napi_value *argv, size_t argc, size_t i, void **data, size_t *len,
               int32_t *ours, int32_t *same) {
  napi_valuetype t;
  *data = NULL;
  *len = 0;
  if (argc <= i || napi_typeof(env, argv[i], &t) != napi_ok || t == napi_undefined) return 1;
  if (napi_get_buffer_info(env, argv[i], data, len) != napi_ok) {
    napi_throw_type_error(env, NULL, "xlock: expected `record` to be a Buffer");
    return 0;
  }
  if (!arg_int(env, argv, argc, i + 1, "ours", ours) || !arg_int(env, argv, argc, i + 2, "same", same))
    return 0;
  if (*ours < 0 || *same < 0 || (size_t)*ours > *len || (size_t)*same > *len) {
    napi_throw_range_error(env, NULL, "xlock: `ours` and `same` must lie within the record");
    return 0;
  }
  return 1;
}

/* verify(fd, path[, record, ours, same]) -> verify_record()'s result. The
 * record Buffer is stamped in place. */
static napi_value js_verify(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  char path[PATH_BUF];
  int32_t fd, ours = 0, same = 0;
  void *data = NULL;
  size_t len = 0;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int pr = 0;
  if (!arg_int(env, argv, argc, 0, "fd", &fd) ||
      (pr = arg_path(env, argv, argc, 1, path)) == 0)
    return NULL;
  if (pr < 0) return make_int(env, pr);
  if (!arg_record(env, argv, argc, 2, &data, &len, &ours, &same)) return NULL;
  return make_int(env, verify_record(fd, path, data, len, (size_t)ours, (size_t)same, 1));
}

/* unlinkHeld(fd, path) -> 0 | 1 (not ours: left alone) | -errno. Deletes the
 * path only while it is still the inode we hold: never a file we do not hold. */
static napi_value js_unlink_held(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  char path[PATH_BUF];
  int32_t fd;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int pr = 0;
  if (!arg_int(env, argv, argc, 0, "fd", &fd) ||
      (pr = arg_path(env, argv, argc, 1, path)) == 0)
    return NULL;
  if (pr < 0) return make_int(env, pr);
  struct stat a;
  int same = held_at(fd, path, &a, 0);
  if (same != 0) return make_int(env, same);
  if (unlink(path) < 0) return make_int(env, errno == ENOENT ? 1 : -errno);
  return make_int(env, 0);
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
