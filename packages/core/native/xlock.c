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
#define _GNU_SOURCE
#ifdef XLOCK_GLIBC_COMPAT
#include "glibc-compat.h" /* prebuilds: load on every glibc Node supports */
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define NAPI_VERSION 8
#include <node_api.h>

#if defined(F_OFD_SETLK) && defined(F_OFD_SETLKW) && defined(F_OFD_GETLK)
#define XLOCK_OFD 1
#else
#define XLOCK_OFD 0
#endif

/* Lock types, as the JS side passes them; XL_FLOCK may be or'ed into any. */
enum { XL_UNLOCK = 0, XL_SHARED = 1, XL_EXCLUSIVE = 2, XL_FLOCK = 4 };

#define PATH_BUF 4096

#define CHECK(call)                                                            \
  do {                                                                         \
    if ((call) != napi_ok) {                                                   \
      napi_throw_error(env, NULL, "xlock: N-API call failed: " #call);         \
      return NULL;                                                             \
    }                                                                          \
  } while (0)

static napi_value make_int(napi_env env, int64_t v) {
  napi_value out;
  if (napi_create_int64(env, v, &out) != napi_ok) return NULL;
  return out;
}

/* Reads argument i as an int32; throws a TypeError naming it otherwise. */
static int arg_int(napi_env env, napi_value *argv, size_t argc, size_t i,
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
static int arg_path(napi_env env, napi_value *argv, size_t argc, size_t i,
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

static int set_lock(int fd, int type, int wait) {
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
  if (fstat(fd, a) < 0) return -errno;
  if (linked && a->st_nlink == 0) return 1;
  if (lstat(path, &b) < 0) return errno == ENOENT ? 1 : -errno;
  return a->st_dev == b.st_dev && a->st_ino == b.st_ino ? 0 : 1;
}

/* Whether the file starts like a lease backend's record: a lease holds no
 * kernel lock, so a kernel acquirer must judge it instead of taking the file
 * (docs/installing.md, "Mixing backends"). `head` is the file's first `n`
 * bytes (verify reads them once, only for a file that is not empty). */
static const char lease_prefix[] = "{\"v\":1,\"backend\":\"lease\"";
#define LEASE_PREFIX_LEN (sizeof lease_prefix - 1)
static int is_lease_record(const char *head, size_t n) {
  return n >= LEASE_PREFIX_LEN && memcmp(head, lease_prefix, LEASE_PREFIX_LEN) == 0;
}

/* verify(fd, path[, record, ours, same]) -> 0 | 1 (not the linked inode at
 * path) | 2 (a lease file: nothing written, the caller judges the lease) |
 * 3 (foreign content: nothing written) | -errno.
 * After a lock is granted: is the locked inode still linked and still the
 * one at `path`? The unlink race (SPEC 3.3 item 2) hinges on this check.
 * When it is and a record Buffer is given, the owner record goes into the
 * file, using the size from the same fstat (no separate stat per lock):
 *   - an empty file gets the record;
 *   - a file whose first `ours` bytes differ from the record's (not one of
 *     our records: podman's last-writer token, a pid file) is another
 *     program's: never written or truncated, and 3 tells the caller so;
 *   - a file that already holds this record up to byte `same` (the same
 *     holder: pid, host, start time) and has its length is left as it is
 *     (repeated acquisitions by one process cost no write);
 *   - else pwrite, then truncate only a longer old record (truncating to the
 *     same size still costs a journalled inode update on ext4), so a
 *     concurrent reader sees the old record, the new one, or the new one
 *     with a tail it must tolerate.
 * The content check reads the file (pread) only when it is not empty. The
 * record is informational: a failed write (a full disk) does not fail the
 * lock. See docs/interop.md ("Foreign lock files"). */
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
  if (argc >= 3) {
    napi_valuetype t;
    CHECK(napi_typeof(env, argv[2], &t));
    if (t != napi_undefined) {
      if (napi_get_buffer_info(env, argv[2], &data, &len) != napi_ok) {
        napi_throw_type_error(env, NULL, "xlock: expected `record` to be a Buffer");
        return NULL;
      }
      if (!arg_int(env, argv, argc, 3, "ours", &ours) ||
          !arg_int(env, argv, argc, 4, "same", &same))
        return NULL;
      if (ours < 0 || same < 0 || (size_t)ours > len || (size_t)same > len) {
        napi_throw_range_error(env, NULL, "xlock: `ours` and `same` must lie within the record");
        return NULL;
      }
    }
  }
  struct stat a;
  int held = held_at(fd, path, &a, 1);
  if (held != 0) return make_int(env, held);
  if (a.st_size > 0) {
    /* One pread of the head serves both checks (lease, foreign/same). */
    char head[512];
    size_t want = len > LEASE_PREFIX_LEN ? len : LEASE_PREFIX_LEN;
    if (want > sizeof head) want = sizeof head;
    ssize_t r;
    do r = pread(fd, head, want, 0);
    while (r < 0 && errno == EINTR);
    if (r < 0) return make_int(env, 0); /* unreadable (write-only): leave it */
    if (is_lease_record(head, (size_t)r)) return make_int(env, 2);
    if (data != NULL) {
      if ((size_t)r < (size_t)ours || memcmp(head, data, (size_t)ours) != 0) return make_int(env, 3);
      if (a.st_size == (off_t)len && (size_t)same <= (size_t)r && memcmp(head, data, (size_t)same) == 0)
        return make_int(env, 0);
    }
  }
  if (data != NULL) {
    ssize_t w;
    do w = pwrite(fd, data, len, 0);
    while (w < 0 && errno == EINTR);
    if (w == (ssize_t)len && a.st_size > (off_t)len) (void)ftruncate(fd, (off_t)len);
  }
  return make_int(env, 0);
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
  /* Filesystems without RENAME_NOREPLACE: link refuses an existing target too. */
  if (link(from, to) < 0) return make_int(env, -errno);
  if (unlink(from) < 0) return make_int(env, -errno);
  return make_int(env, 0);
}

/* ---- Blocking waits on pooled threads ----------------------------------- */

/*
 * A wait blocks in F_OFD_SETLKW (flock elsewhere) on a thread of a small
 * process-wide pool, never on libuv's threadpool. A pool thread serves one
 * wait at a time and parks between waits; a thread idle for IDLE_SECONDS
 * exits, so a process that stops waiting is back to its own threads. No
 * thread is created or joined per wait, and each environment (main thread,
 * worker) has one threadsafe function, created at its first wait, that
 * resolves the waits' promises. docs/waiting.md describes the machinery.
 *
 * Cancellation (a timeout, or cancel() for an AbortSignal) interrupts the
 * blocked call with a thread-directed signal whose handler is installed
 * without SA_RESTART (the call fails with EINTR). The signal comes from a
 * per-thread POSIX timer: armed at the deadline, or at once by cancel(), and
 * re-firing every RESEND_NS until the wait ends, so a signal that lands just
 * before the thread enters the call (and is lost) is sent again: no
 * cancellation is lost, and no JS timer runs while waiting. Where such timers
 * (or the signal) are not available, the thread polls with a non-blocking
 * attempt every POLL_NS instead.
 */
#if defined(__linux__) && defined(SIGEV_THREAD_ID)
#define XLOCK_TIMERS 1
#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif
#else
#define XLOCK_TIMERS 0
#endif

#define IDLE_SECONDS 2
#define RESEND_NS 2000000L
#define POLL_NS 1000000L

static int cancel_signal(void) { return SIGRTMIN + 7; }
static void on_cancel_signal(int sig) { (void)sig; }
static pthread_once_t signal_once = PTHREAD_ONCE_INIT;
static int signal_ready = 0;

static void install_signal(void) {
#if XLOCK_TIMERS
  struct sigaction sa, old;
  if (sigaction(cancel_signal(), NULL, &old) == 0 &&
      old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN)
    return; /* someone else owns it: waits poll instead */
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_cancel_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0; /* no SA_RESTART */
  signal_ready = sigaction(cancel_signal(), &sa, NULL) == 0;
#endif
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

typedef struct envstate envstate;
typedef struct worker worker;

typedef struct job {
  int fd;
  int type;
  int64_t deadline; /* CLOCK_MONOTONIC ns; 0 = none */
  atomic_int cancelled;
  int result;
  napi_deferred deferred;
  envstate *es;
  worker *wk;       /* set once when handed to a thread */
  struct job *next; /* the environment's pending list (its JS thread only) */
} job;

struct worker {
  pthread_mutex_t mu; /* guards go, cur and the timer */
  pthread_cond_t cv;  /* signalled when go is set */
  int go;             /* a job (or trim's exit) was handed over */
  job *cur;           /* the job being waited for */
  job *next_job;      /* handed over by submit (pool_mu) */
  int idle;           /* on the idle list (pool_mu) */
  worker *next;       /* idle list / free list (pool_mu) */
#if XLOCK_TIMERS
  int timer_ok;
  int timer; /* kernel timer id: raw system calls, so no librt (old glibc) */
#endif
};

/* Worker structs are recycled, never freed: cancel() may look at the worker
 * of a job whose thread has moved on (it then finds another `cur`). */
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static worker *idle_list;
static worker *free_list;
static int pool_threads; /* running pool threads (pool_mu) */

struct envstate {
  napi_threadsafe_function tsfn;
  job *pending;         /* JS thread only */
  int npending;         /* JS thread only */
  atomic_int in_flight; /* jobs a pool thread may still touch */
};

#if XLOCK_TIMERS
/* mu held. Fires at `at` (absolute), then every RESEND_NS; at == 0 disarms. */
static void arm(worker *wk, int64_t at) {
  if (!wk->timer_ok) return;
  struct itimerspec its;
  memset(&its, 0, sizeof its);
  if (at != 0) {
    its.it_value.tv_sec = at / 1000000000LL;
    its.it_value.tv_nsec = at % 1000000000LL;
    its.it_interval.tv_nsec = RESEND_NS;
  }
  syscall(SYS_timer_settime, wk->timer, TIMER_ABSTIME, &its, NULL);
}
#endif

/* Tests only: a pause between the last cancel check and the blocking call,
 * which widens the window where a cancel signal is lost (see js_test_gap). */
static atomic_long test_gap_ns;

static void test_gap(void) {
  long gap = atomic_load(&test_gap_ns);
  if (gap <= 0) return;
  struct timespec ts = {gap / 1000000000L, gap % 1000000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

static int wait_result(job *j) {
  if (atomic_load(&j->cancelled)) return -ECANCELED;
  if (j->deadline != 0 && now_ns() >= j->deadline) return -ETIMEDOUT;
  return 1;
}

static int run_job(worker *wk, job *j) {
  int res;
  int signals = 0;
  pthread_mutex_lock(&wk->mu);
  wk->cur = j;
#if XLOCK_TIMERS
  signals = wk->timer_ok;
  if (signals && j->deadline != 0) arm(wk, j->deadline);
#endif
  pthread_mutex_unlock(&wk->mu);
  for (;;) {
    if ((res = wait_result(j)) != 1) break;
    test_gap();
    if (set_lock(j->fd, j->type, signals) == 0) {
      res = 0;
      if (atomic_load(&j->cancelled)) {
        set_lock(j->fd, XL_UNLOCK | (j->type & XL_FLOCK), 0);
        res = -ECANCELED;
      }
      break;
    }
    if (errno == EINTR) continue;
    if (!signals && (errno == EAGAIN || errno == EACCES || errno == EWOULDBLOCK)) {
      struct timespec ts = {0, POLL_NS};
      nanosleep(&ts, NULL);
      continue;
    }
    res = -errno;
    break;
  }
  return res;
}

/* Parks until submit() or trim() hands something over; 0 when idle for
 * IDLE_SECONDS with nothing handed over (the thread then leaves). */
static int park(worker *wk) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += IDLE_SECONDS;
  pthread_mutex_lock(&wk->mu);
  while (!wk->go) {
    if (pthread_cond_timedwait(&wk->cv, &wk->mu, &until) != ETIMEDOUT) continue;
    pthread_mutex_unlock(&wk->mu);
    pthread_mutex_lock(&pool_mu);
    if (wk->idle) { /* nothing handed over: leave the idle list */
      worker **pp = &idle_list;
      while (*pp != wk) pp = &(*pp)->next;
      *pp = wk->next;
      wk->idle = 0;
      pthread_mutex_unlock(&pool_mu);
      return 0;
    }
    pthread_mutex_unlock(&pool_mu);
    until.tv_sec += IDLE_SECONDS; /* taken off the idle list: `go` is coming */
    pthread_mutex_lock(&wk->mu);
  }
  wk->go = 0;
  pthread_mutex_unlock(&wk->mu);
  return 1;
}

/* Hands over to a parked worker (no lock held). */
static void unpark(worker *wk) {
  pthread_mutex_lock(&wk->mu);
  wk->go = 1;
  pthread_cond_signal(&wk->cv);
  pthread_mutex_unlock(&wk->mu);
}

static void *worker_main(void *arg) {
  worker *wk = arg;
  pthread_detach(pthread_self());
#if XLOCK_TIMERS
  wk->timer_ok = 0;
  if (signal_ready) {
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = cancel_signal();
    sev.sigev_notify_thread_id = (pid_t)syscall(SYS_gettid);
    wk->timer_ok = syscall(SYS_timer_create, CLOCK_MONOTONIC, &sev, &wk->timer) == 0;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, cancel_signal());
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
  }
#endif
  for (;;) {
    job *j;
    if (!park(wk)) goto out;
    pthread_mutex_lock(&pool_mu);
    j = wk->next_job;
    wk->next_job = NULL;
    pthread_mutex_unlock(&pool_mu);
    if (j == NULL) goto out; /* trim() */
    envstate *es = j->es;
    j->result = run_job(wk, j);
    /* Report first (the hand-off's latency), tidy up after. From here on
     * the JS thread may free j. */
    napi_call_threadsafe_function(es->tsfn, j, napi_tsfn_nonblocking);
    atomic_fetch_sub(&es->in_flight, 1);
    pthread_mutex_lock(&wk->mu);
    wk->cur = NULL;
#if XLOCK_TIMERS
    arm(wk, 0);
#endif
    pthread_mutex_unlock(&wk->mu);
    pthread_mutex_lock(&pool_mu);
    wk->idle = 1;
    wk->next = idle_list;
    idle_list = wk;
    pthread_mutex_unlock(&pool_mu);
  }
out:
#if XLOCK_TIMERS
  pthread_mutex_lock(&wk->mu);
  if (wk->timer_ok) syscall(SYS_timer_delete, wk->timer);
  wk->timer_ok = 0;
  pthread_mutex_unlock(&wk->mu);
#endif
  pthread_mutex_lock(&pool_mu);
  pool_threads--;
  wk->next = free_list;
  free_list = wk;
  pthread_mutex_unlock(&pool_mu);
  return NULL;
}

/* Hands `j` to an idle pool thread, or to a new one. 0 | an errno. */
static int submit(job *j) {
  pthread_mutex_lock(&pool_mu);
  worker *wk = idle_list;
  if (wk != NULL) {
    idle_list = wk->next;
    wk->idle = 0;
    wk->next_job = j;
    j->wk = wk;
    pthread_mutex_unlock(&pool_mu);
    unpark(wk);
    return 0;
  }
  wk = free_list;
  if (wk != NULL) {
    free_list = wk->next;
  } else {
    wk = calloc(1, sizeof *wk);
    if (wk == NULL) {
      pthread_mutex_unlock(&pool_mu);
      return ENOMEM;
    }
    pthread_mutex_init(&wk->mu, NULL);
    pthread_cond_init(&wk->cv, NULL);
  }
  wk->next_job = j;
  wk->go = 1; /* the new thread starts with its job */
  wk->idle = 0;
  wk->cur = NULL;
  j->wk = wk;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  /* Start with every signal blocked so process-directed signals (SIGINT,
   * SIGCHLD...) never land on a pool thread; it unblocks only its own. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_t thread;
  int rc = pthread_create(&thread, &attr, worker_main, wk);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    wk->next_job = NULL;
    j->wk = NULL;
    wk->next = free_list;
    free_list = wk;
  } else {
    pool_threads++;
  }
  pthread_mutex_unlock(&pool_mu);
  return rc;
}

/* Asks the wait of `j` to stop (JS thread). Idempotent. */
static void job_cancel(job *j) {
  atomic_store(&j->cancelled, 1);
#if XLOCK_TIMERS
  worker *wk = j->wk;
  if (wk == NULL) return;
  pthread_mutex_lock(&wk->mu);
  if (wk->cur == j) arm(wk, now_ns());
  pthread_mutex_unlock(&wk->mu);
#endif
}

static void call_js(napi_env env, napi_value cb, void *context, void *data) {
  envstate *es = context;
  job *j = data;
  (void)cb;
  if (env == NULL) { /* environment torn down */
    free(j);
    return;
  }
  job **pp = &es->pending;
  while (*pp != NULL && *pp != j) pp = &(*pp)->next;
  if (*pp == j) *pp = j->next;
  if (--es->npending == 0) napi_unref_threadsafe_function(env, es->tsfn);
  napi_value v = make_int(env, j->result);
  napi_deferred d = j->deferred;
  free(j);
  if (v != NULL) napi_resolve_deferred(env, d, v);
}

/* An environment (a worker thread) going away with waits pending: stop
 * them, and let no pool thread touch it afterwards. */
static void env_cleanup(void *arg) {
  envstate *es = arg;
  struct timespec ms = {0, 1000000};
  while (atomic_load(&es->in_flight) > 0) {
    for (job *j = es->pending; j != NULL; j = j->next) job_cancel(j);
    nanosleep(&ms, NULL);
  }
}

static void env_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

static envstate *env_state(napi_env env) {
  envstate *es = NULL;
  if (napi_get_instance_data(env, (void **)&es) == napi_ok && es != NULL) return es;
  napi_value name;
  es = calloc(1, sizeof *es);
  if (es == NULL) return NULL;
  if (napi_create_string_utf8(env, "xlock.wait", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, NULL, env_finalize,
                                      es, call_js, &es->tsfn) != napi_ok) {
    free(es);
    return NULL;
  }
  napi_unref_threadsafe_function(env, es->tsfn); /* held only while waits are pending */
  napi_set_instance_data(env, es, NULL, NULL);
  napi_add_env_cleanup_hook(env, env_cleanup, es);
  return es;
}

static job *find_job(napi_env env, int fd) {
  envstate *es = NULL;
  if (napi_get_instance_data(env, (void **)&es) != napi_ok || es == NULL) return NULL;
  for (job *j = es->pending; j != NULL; j = j->next)
    if (j->fd == fd) return j;
  return NULL;
}

/* wait(fd, type, timeoutMs) -> Promise<number>: 0 once the lock is held,
 * -ETIMEDOUT after timeoutMs (a negative timeoutMs: no timeout), -ECANCELED
 * after cancel(fd), or another -errno. One pending wait per descriptor. */
static napi_value js_wait(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], promise;
  int32_t fd, type;
  double timeout = -1;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!arg_int(env, argv, argc, 0, "fd", &fd) ||
      !arg_int(env, argv, argc, 1, "type", &type))
    return NULL;
  if (argc >= 3) {
    napi_valuetype t;
    if (napi_typeof(env, argv[2], &t) != napi_ok || t != napi_number) {
      napi_throw_type_error(env, NULL, "xlock: expected `timeoutMs` to be a number");
      return NULL;
    }
    napi_get_value_double(env, argv[2], &timeout);
  }
  if (find_job(env, fd) != NULL) {
    napi_throw_error(env, "EBUSY", "xlock: a wait on this descriptor is already pending");
    return NULL;
  }
  pthread_once(&signal_once, install_signal);
  envstate *es = env_state(env);
  job *j = es ? calloc(1, sizeof *j) : NULL;
  if (j == NULL) {
    napi_throw_error(env, "ENOMEM", "xlock: out of memory");
    return NULL;
  }
  j->fd = fd;
  j->type = type;
  /* Beyond ~292 years nothing fires: treat as no timeout. */
  if (timeout >= 0 && timeout < 9e12) j->deadline = now_ns() + (int64_t)(timeout * 1e6) + 1;
  j->es = es;
  if (napi_create_promise(env, &j->deferred, &promise) != napi_ok) {
    free(j);
    napi_throw_error(env, NULL, "xlock: cannot create a promise");
    return NULL;
  }
  atomic_fetch_add(&es->in_flight, 1);
  int rc = submit(j);
  if (rc != 0) {
    atomic_fetch_sub(&es->in_flight, 1);
    napi_resolve_deferred(env, j->deferred, make_int(env, -rc));
    free(j);
    return promise;
  }
  j->next = es->pending;
  es->pending = j;
  if (es->npending++ == 0) napi_ref_threadsafe_function(env, es->tsfn);
  return promise;
}

/* cancel(fd): ask the pending wait on `fd` to stop. Idempotent; a no-op when
 * none is pending. */
static napi_value js_cancel(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!arg_int(env, argv, argc, 0, "fd", &fd)) return NULL;
  job *j = find_job(env, fd);
  if (j != NULL) job_cancel(j);
  return NULL;
}

/* trimWaitThreads() -> how many pool threads are still running. Idle ones
 * are asked to exit now (tests use it to see the thread count come back). */
static napi_value js_trim(napi_env env, napi_callback_info info) {
  (void)info;
  pthread_mutex_lock(&pool_mu);
  while (idle_list != NULL) {
    worker *wk = idle_list;
    idle_list = wk->next;
    wk->idle = 0;
    wk->next_job = NULL;
    pthread_mutex_unlock(&pool_mu);
    unpark(wk);
    pthread_mutex_lock(&pool_mu);
  }
  int n = pool_threads;
  pthread_mutex_unlock(&pool_mu);
  return make_int(env, n);
}

/* setWaitTestGap(ns): tests only (see test_gap). */
static napi_value js_test_gap(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t ns;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!arg_int(env, argv, argc, 0, "ns", &ns)) return NULL;
  atomic_store(&test_gap_ns, ns);
  return NULL;
}

/* ---- Watching a process for its exit ------------------------------------ */

/* watchPid(pid, callback(result)) -> handle | -errno. A lock taken on behalf
 * of another process (`pid` option) is released when that process exits
 * (Julia's mkpidlock(path, pid)). pidfd_open(2) gives a descriptor that
 * becomes readable when the process exits (a zombie counts: it has exited),
 * and, unlike kill(pid, 0), never mistakes a reused pid for the original. A
 * dedicated thread (64 KiB stack, every signal blocked) polls it together
 * with an eventfd that unwatchPid() writes to; the callback receives 0 when
 * the process exited, -ECANCELED after unwatchPid(). -ENOSYS (kernels before
 * 5.3, other systems) and -ESRCH (already gone) are returned at once. The
 * watch does not keep the event loop alive. */
#if defined(__linux__) && defined(SYS_pidfd_open)
#include <poll.h>
#include <sys/eventfd.h>

typedef struct pidwatch {
  int pidfd;
  int wakefd;
  pthread_t thread;
  atomic_int finished;
  int result;
  int joined; /* main thread only */
  int refs;   /* main thread only: the thread's report + the JS handle */
  napi_threadsafe_function tsfn;
} pidwatch;

static void pidwatch_unref(pidwatch *w) {
  if (--w->refs == 0) free(w);
}

static void pidwatch_join(pidwatch *w) {
  if (!w->joined) {
    pthread_join(w->thread, NULL);
    w->joined = 1;
    close(w->pidfd);
    close(w->wakefd);
  }
}

static void *pidwatch_thread(void *arg) {
  pidwatch *w = arg;
  struct pollfd fds[2] = {{w->pidfd, POLLIN, 0}, {w->wakefd, POLLIN, 0}};
  int r;
  do r = poll(fds, 2, -1);
  while (r < 0 && errno == EINTR);
  w->result = r < 0 ? -errno : (fds[0].revents != 0 ? 0 : -ECANCELED);
  atomic_store(&w->finished, 1);
  napi_call_threadsafe_function(w->tsfn, w, napi_tsfn_blocking);
  napi_release_threadsafe_function(w->tsfn, napi_tsfn_release);
  return NULL;
}

static void pidwatch_cleanup_hook(void *arg);

static void pidwatch_call_js(napi_env env, napi_value cb, void *context, void *data) {
  pidwatch *w = data;
  (void)context;
  if (env == NULL) return; /* environment torn down: the cleanup hook joined it */
  pidwatch_join(w);
  napi_remove_env_cleanup_hook(env, pidwatch_cleanup_hook, w);
  napi_value argv[1], undefined;
  argv[0] = make_int(env, w->result);
  napi_get_undefined(env, &undefined);
  napi_call_function(env, undefined, cb, 1, argv, NULL);
  pidwatch_unref(w);
}

static void pidwatch_wake(pidwatch *w) {
  uint64_t one = 1;
  if (!w->joined && !atomic_load(&w->finished)) (void)!write(w->wakefd, &one, sizeof one);
}

/* A worker thread exiting with a watch pending: stop the thread first. */
static void pidwatch_cleanup_hook(void *arg) {
  pidwatch *w = arg;
  pidwatch_wake(w);
  pidwatch_join(w);
}

static void pidwatch_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  pidwatch_unref(data);
}

static napi_value js_watch_pid(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], name, handle;
  int32_t pid;
  napi_valuetype t;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!arg_int(env, argv, argc, 0, "pid", &pid)) return NULL;
  if (argc < 2 || napi_typeof(env, argv[1], &t) != napi_ok || t != napi_function) {
    napi_throw_type_error(env, NULL, "xlock: expected `callback` to be a function");
    return NULL;
  }
  int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
  if (pidfd < 0) return make_int(env, -errno);
  (void)fcntl(pidfd, F_SETFD, FD_CLOEXEC);
  int wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wakefd < 0) {
    int e = errno;
    close(pidfd);
    return make_int(env, -e);
  }
  pidwatch *w = calloc(1, sizeof *w);
  if (w == NULL) {
    close(pidfd);
    close(wakefd);
    return make_int(env, -ENOMEM);
  }
  w->pidfd = pidfd;
  w->wakefd = wakefd;
  w->refs = 2;
  CHECK(napi_create_string_utf8(env, "xlock.watchPid", NAPI_AUTO_LENGTH, &name));
  if (napi_create_threadsafe_function(env, argv[1], NULL, name, 0, 1, NULL, NULL,
                                      NULL, pidwatch_call_js, &w->tsfn) != napi_ok) {
    close(pidfd);
    close(wakefd);
    free(w);
    napi_throw_error(env, NULL, "xlock: cannot create a threadsafe function");
    return NULL;
  }
  napi_unref_threadsafe_function(env, w->tsfn); /* a watch keeps nothing alive */
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(&w->thread, &attr, pidwatch_thread, w);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    napi_release_threadsafe_function(w->tsfn, napi_tsfn_abort);
    close(pidfd);
    close(wakefd);
    free(w);
    return make_int(env, -rc);
  }
  napi_add_env_cleanup_hook(env, pidwatch_cleanup_hook, w);
  CHECK(napi_create_external(env, w, pidwatch_finalize, NULL, &handle));
  return handle;
}

/* unwatchPid(handle): stop a watch (its callback then receives -ECANCELED).
 * Idempotent; safe after the watch has reported. */
static napi_value js_unwatch_pid(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  void *data = NULL;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || napi_get_value_external(env, argv[0], &data) != napi_ok) {
    napi_throw_type_error(env, NULL, "xlock: expected a watch handle");
    return NULL;
  }
  pidwatch_wake(data);
  return NULL;
}
#else
static napi_value js_watch_pid(napi_env env, napi_callback_info info) {
  (void)info;
  return make_int(env, -ENOSYS);
}
static napi_value js_unwatch_pid(napi_env env, napi_callback_info info) {
  (void)env;
  (void)info;
  return NULL;
}
#endif

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"open", NULL, js_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setlk", NULL, js_setlk, NULL, NULL, NULL, napi_enumerable, NULL},
      {"getlk", NULL, js_getlk, NULL, NULL, NULL, napi_enumerable, NULL},
      {"verify", NULL, js_verify, NULL, NULL, NULL, napi_enumerable, NULL},
      {"unlinkHeld", NULL, js_unlink_held, NULL, NULL, NULL, napi_enumerable, NULL},
      {"close", NULL, js_close, NULL, NULL, NULL, napi_enumerable, NULL},
      {"renameNoReplace", NULL, js_rename_noreplace, NULL, NULL, NULL, napi_enumerable, NULL},
      {"wait", NULL, js_wait, NULL, NULL, NULL, napi_enumerable, NULL},
      {"cancel", NULL, js_cancel, NULL, NULL, NULL, napi_enumerable, NULL},
      {"watchPid", NULL, js_watch_pid, NULL, NULL, NULL, napi_enumerable, NULL},
      {"unwatchPid", NULL, js_unwatch_pid, NULL, NULL, NULL, napi_enumerable, NULL},
      {"trimWaitThreads", NULL, js_trim, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setWaitTestGap", NULL, js_test_gap, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_value kind;
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok)
    return NULL;
  if (napi_create_string_utf8(env, XLOCK_OFD ? "ofd" : "flock", NAPI_AUTO_LENGTH, &kind) != napi_ok)
    return NULL;
  napi_set_named_property(env, exports, "kind", kind);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
