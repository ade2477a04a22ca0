/*
 * sweep.c: the per-entry work of @x/staging's recovery sweep in one call
 * (docs/staging-protocol.md, "Recovery"), so that an entry costs one
 * JS-to-native hop instead of one per system call.
 *
 * reclaim(rootFd, lockName, dirNames, budgetUs, heldFd, out, errPath) -> code
 *
 *   1. Unless `heldFd` >= 0 (a call that ran out of time before): open
 *      `lockName` in the root without creating it (O_NOFOLLOW), take the
 *      exclusive lock without waiting (held elsewhere: SW_LIVE), check that
 *      the locked inode is still linked and still the one at `lockName`
 *      (not: SW_GONE, the entry finished meanwhile), and that it is no lease
 *      backend's record (SW_LEASE: the caller judges the lease).
 *   2. Remove each of `dirNames` (in the root) and everything under it with
 *      *at calls: a symlink is unlinked, never followed; a directory of
 *      another device is neither entered nor removed (EBUSY, reported as a
 *      mount point). Missing names are skipped (a concurrent remover). An
 *      error stops neither the walk nor the other names, but the directories
 *      above the failure stay and the entry fails (SW_ERROR).
 *   3. No error: unlink `lockName` (we hold its inode, and only a holder
 *      deletes a lock file), close (the lock goes): SW_DONE.
 *
 * Time: after `budgetUs` microseconds the walk stops at the next deletion
 * and returns SW_AGAIN with the descriptor still held in out[1]; the caller
 * lets its event loop run and calls again with it as `heldFd` (the walk
 * starts over on what is left). So a huge tree never blocks the loop long.
 *
 * out (Float64Array of 5): [0] bytes of regular files deleted by this call,
 * [1] the held descriptor (SW_AGAIN), [2] errno and [3] the failing call
 * (SW_ERROR); [4] is an input, the root's device (st_dev: one fstat less
 * per call); errPath receives the failing path relative to the root,
 * NUL-terminated. Mount-point fences listed in /proc/self/mountinfo are the
 * caller's job (it knows the mount table); this file checks the device.
 */
#include "xlock.h"
#include <dirent.h>
#include <stddef.h>

enum { SW_DONE = 0, SW_AGAIN = 1, SW_LIVE = 2, SW_GONE = 3, SW_LEASE = 4, SW_ERROR = 5 };
/* The call that failed, as out[3]. */
enum { SC_OPEN = 0, SC_FCNTL = 1, SC_STAT = 2, SC_UNLINK = 3, SC_RMDIR = 4, SC_READDIR = 5, SC_MOUNT = 6 };

#define NAME_BUF 256
#define DENTS_BUF 8192

struct linux_dirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

/* One open directory of the walk. */
typedef struct frame {
  int fd;
  int failed;        /* something under it failed: it stays */
  long pos, len;     /* the unread part of buf */
  char name[NAME_BUF]; /* its name in the parent */
  char buf[DENTS_BUF];
} frame;

typedef struct walk {
  int root; /* the bottom frame's parent */
  dev_t dev;
  int64_t deadline;
  long deleted;
  double bytes;
  int err, sc; /* the first error */
  char *errpath;
  frame **stack;
  int depth, cap;
} walk;

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Records the first error, with the path of `child` under the open frames. */
static void fail(walk *w, int err, int sc, const char *child) {
  if (w->err) return;
  w->err = err;
  w->sc = sc;
  size_t n = 0;
  for (int i = 0; i <= w->depth; i++) {
    const char *part = i < w->depth ? w->stack[i]->name : child;
    if (part == NULL) break;
    size_t len = strlen(part);
    if (n + len + 2 >= PATH_BUF) break; /* too deep to name: the prefix */
    if (n) w->errpath[n++] = '/';
    memcpy(w->errpath + n, part, len);
    n += len;
  }
  w->errpath[n] = '\0';
}

static int out_of_time(walk *w) { return w->deleted > 0 && mono_ns() >= w->deadline; }

/* Opens directory `name` of `parent` as a new frame. 1 pushed, 0 not a
 * directory any more (swapped: the caller unlinks it), -1 gone, -2 failed
 * (recorded). */
static int push(walk *w, int parent, const char *name) {
  int fd;
  do fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    if (errno == ENOTDIR || errno == ELOOP) return 0;
    if (errno == ENOENT) return -1;
    fail(w, errno, SC_OPEN, name);
    return -2;
  }
  struct stat st;
  int e = fstat(fd, &st) < 0 ? errno : st.st_dev != w->dev ? EBUSY : 0;
  frame *f = NULL;
  if (!e && w->depth == w->cap) {
    int cap = w->cap ? w->cap * 2 : 8;
    frame **s = realloc(w->stack, (size_t)cap * sizeof *s);
    if (s) {
      w->stack = s;
      w->cap = cap;
    } else {
      e = ENOMEM;
    }
  }
  if (!e && !(f = malloc(sizeof *f))) e = ENOMEM;
  if (e) {
    close(fd);
    /* Another device: a mount point, never entered. */
    fail(w, e, e == EBUSY ? SC_MOUNT : e == ENOMEM ? SC_OPEN : SC_STAT, name);
    return -2;
  }
  f->fd = fd;
  f->failed = 0;
  f->pos = f->len = 0;
  snprintf(f->name, sizeof f->name, "%s", name);
  w->stack[w->depth++] = f;
  return 1;
}

/* Closes the top frame; removes its directory when nothing under it failed. */
static void pop(walk *w, int rmdir_it) {
  frame *f = w->stack[--w->depth];
  int parent = w->depth ? w->stack[w->depth - 1]->fd : w->root;
  close(f->fd);
  if (rmdir_it) {
    int failed = f->failed;
    if (!failed) {
      if (unlinkat(parent, f->name, AT_REMOVEDIR) == 0) w->deleted++;
      else if (errno != ENOENT) {
        fail(w, errno, SC_RMDIR, f->name);
        failed = 1;
      }
    }
    if (failed && w->depth) w->stack[w->depth - 1]->failed = 1;
  }
  free(f);
}

/* Deletes the non-directory `name` of `dirfd`, counting a regular file's
 * size (asked with fstatat unless the type is known not to be a regular file). */
static int unlink_file(walk *w, int dirfd, const char *name, int maybe_reg) {
  off_t size = 0;
  if (maybe_reg) {
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
      if (errno == ENOENT) return 0;
      fail(w, errno, SC_STAT, name);
      return -1;
    }
    if (S_ISREG(st.st_mode)) size = st.st_size;
  }
  if (unlinkat(dirfd, name, 0) < 0) {
    if (errno == ENOENT) return 0;
    fail(w, errno, SC_UNLINK, name);
    return -1;
  }
  w->bytes += (double)size;
  w->deleted++;
  return 0;
}

/*
 * Removes `name` of the root and everything under it. Returns 0 when done
 * (errors recorded in w), 1 when out of time (every frame closed, nothing
 * else changed: a later call starts over on what is left).
 */
static int remove_tree(walk *w, const char *name) {
  /* A directory is opened at once (the common case: one call less than a
   * stat first); anything else is unlinked. */
  int p = push(w, w->root, name);
  if (p == 0) unlink_file(w, w->root, name, 1);
  if (p <= 0) return 0;
  while (w->depth > 0) {
    frame *f = w->stack[w->depth - 1];
    if (f->pos >= f->len) {
      long n;
      do n = syscall(SYS_getdents64, f->fd, f->buf, sizeof f->buf);
      while (n < 0 && errno == EINTR);
      if (n < 0) {
        fail(w, errno, SC_READDIR, NULL);
        f->failed = 1;
      }
      if (n <= 0) {
        pop(w, 1);
        continue;
      }
      f->pos = 0;
      f->len = n;
    }
    struct linux_dirent64 *d = (struct linux_dirent64 *)(f->buf + f->pos);
    f->pos += d->d_reclen;
    const char *child = d->d_name;
    if (child[0] == '.' && (child[1] == '\0' || (child[1] == '.' && child[2] == '\0'))) continue;
    int r;
    if (d->d_type == DT_DIR || d->d_type == DT_UNKNOWN) {
      r = push(w, f->fd, child);
      if (r == 0) r = unlink_file(w, f->fd, child, 1);
      else if (r == -1) r = 0; /* gone meanwhile */
    } else {
      r = unlink_file(w, f->fd, child, d->d_type == DT_REG);
    }
    if (r < 0) f->failed = 1; /* f is still this frame's: push appends after it */
    if (out_of_time(w)) {
      while (w->depth > 0) pop(w, 0);
      return 1;
    }
  }
  return 0;
}

/*
 * One entry's reclaim (steps 1-3 above): SW_* code, results in out/errpath.
 * `deadline` is the walk's (CLOCK_MONOTONIC ns).
 */
static int reclaim_entry(int root, const char *lock_name, char dirs[][NAME_BUF], uint32_t ndirs, int64_t deadline,
                         int held, double *out, char *errpath) {
  out[0] = 0;
  out[1] = -1;
  out[2] = 0;
  out[3] = 0;
  errpath[0] = '\0';

  int fd = held;
  if (fd < 0) {
    do fd = openat(root, lock_name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) {
      if (errno == ENOENT) return SW_GONE;
      out[2] = errno;
      out[3] = SC_OPEN;
      snprintf(errpath, PATH_BUF, "%s", lock_name);
      return SW_ERROR;
    }
    int r;
    do r = set_lock(fd, XL_EXCLUSIVE, 0);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
      int e = errno;
      close(fd);
      if (e == EAGAIN || e == EACCES || e == EWOULDBLOCK) return SW_LIVE;
      out[2] = e;
      out[3] = SC_FCNTL;
      snprintf(errpath, PATH_BUF, "%s", lock_name);
      return SW_ERROR;
    }
    /* The unlinked-inode race: is what we locked still the file at the name? */
    struct stat a, b;
    int e = fstat(fd, &a) < 0 ? errno : a.st_nlink == 0 ? ENOENT
            : fstatat(root, lock_name, &b, AT_SYMLINK_NOFOLLOW) < 0 ? errno
            : (a.st_dev != b.st_dev || a.st_ino != b.st_ino) ? ENOENT : 0;
    if (e) {
      close(fd);
      if (e == ENOENT) return SW_GONE;
      out[2] = e;
      out[3] = SC_STAT;
      snprintf(errpath, PATH_BUF, "%s", lock_name);
      return SW_ERROR;
    }
    if (a.st_size > 0) {
      char head[64];
      ssize_t n;
      do n = pread(fd, head, sizeof head, 0);
      while (n < 0 && errno == EINTR);
      if (n > 0 && is_lease_record(head, (size_t)n)) {
        close(fd);
        return SW_LEASE;
      }
    }
  }

  walk w;
  memset(&w, 0, sizeof w);
  w.root = root;
  w.dev = (dev_t)out[4]; /* the root's: set once by the caller */
  w.deadline = deadline;
  w.errpath = errpath;
  int again = 0;
  for (uint32_t i = 0; i < ndirs && !again; i++) again = remove_tree(&w, dirs[i]);
  free(w.stack);
  out[0] = w.bytes;
  if (again) {
    out[1] = fd;
    return SW_AGAIN;
  }
  if (!w.err && unlinkat(root, lock_name, 0) < 0) {
    w.err = errno;
    w.sc = SC_UNLINK;
    snprintf(errpath, PATH_BUF, "%s", lock_name);
  }
  close(fd);
  if (w.err) {
    out[2] = w.err;
    out[3] = w.sc;
    return SW_ERROR;
  }
  return SW_DONE;
}

/* Reads argument i as one path component (no '/', not empty, not . or ..) into buf. */
static int arg_name(napi_env env, napi_value v, char *buf) {
  size_t len = 0;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_string ||
      napi_get_value_string_utf8(env, v, buf, NAME_BUF, &len) != napi_ok || len == 0 ||
      len >= NAME_BUF - 1 || strlen(buf) != len || strchr(buf, '/') != NULL || strcmp(buf, ".") == 0 ||
      strcmp(buf, "..") == 0) {
    napi_throw_type_error(env, NULL, "xlock: expected a file name (one path component)");
    return 0;
  }
  return 1;
}

napi_value js_reclaim(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t root, budget_us, held;
  char lock_name[NAME_BUF];
  char dirs[2][NAME_BUF];
  uint32_t ndirs = 0;
  bool is_array = false;
  if (!arg_int(env, argv, argc, 0, "rootFd", &root)) return NULL;
  if (argc < 7 || !arg_name(env, argv[1], lock_name)) {
    if (argc < 7) napi_throw_type_error(env, NULL, "xlock: reclaim takes 7 arguments");
    return NULL;
  }
  CHECK(napi_is_array(env, argv[2], &is_array));
  if (!is_array || napi_get_array_length(env, argv[2], &ndirs) != napi_ok || ndirs > 2) {
    napi_throw_type_error(env, NULL, "xlock: expected `dirNames` to be an array of at most 2 names");
    return NULL;
  }
  for (uint32_t i = 0; i < ndirs; i++) {
    napi_value v;
    CHECK(napi_get_element(env, argv[2], i, &v));
    if (!arg_name(env, v, dirs[i])) return NULL;
  }
  if (!arg_int(env, argv, argc, 3, "budgetUs", &budget_us) || !arg_int(env, argv, argc, 4, "heldFd", &held))
    return NULL;
  napi_typedarray_type tt;
  size_t olen = 0, plen = 0;
  void *odata = NULL, *pdata = NULL;
  bool is_buf = false;
  if (napi_get_typedarray_info(env, argv[5], &tt, &olen, &odata, NULL, NULL) != napi_ok ||
      tt != napi_float64_array || olen < 5) {
    napi_throw_type_error(env, NULL, "xlock: expected `out` to be a Float64Array of 5");
    return NULL;
  }
  CHECK(napi_is_buffer(env, argv[6], &is_buf));
  if (!is_buf || napi_get_buffer_info(env, argv[6], &pdata, &plen) != napi_ok || plen < PATH_BUF) {
    napi_throw_type_error(env, NULL, "xlock: expected `errPath` to be a Buffer of 4096 bytes");
    return NULL;
  }
  return make_int(env, reclaim_entry(root, lock_name, dirs, ndirs,
                                     mono_ns() + (int64_t)(budget_us > 0 ? budget_us : 0) * 1000, held,
                                     odata, pdata));
}

/* Whether `s` (NUL-terminated) is an entry id: 1 to 13 of [0-9a-z]. Mirrors
 * ID in packages/staging/src/naming.ts; a name this file does not accept
 * goes to the JavaScript sweep, which classifies it (so this may only ever
 * accept less than naming.ts, never more). */
static int is_id(const char *s) {
  size_t n = 0;
  for (; s[n]; n++)
    if (n == 13 || !((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'z'))) return 0;
  return n > 0;
}

#define LOCK_PREFIX "lock-"
#define CS_DIR_PREFIX "temp-dir-"

enum { SB_END = 0, SB_SLICE = 1, SB_NAME = 2, SB_ERROR = 3, SB_COUNTED = 4, SB_READ_ERROR = 5, SB_CANCELLED = 6 };
enum { SB_EACH = 1, SB_BACKGROUND = 2 }; /* flags */
#define SB_OUT 13 /* length of `out` */

/*
 * sweep(rootFd, budgetUs, flags, buf, out, errPath) -> code: the sweep's
 * loop over the root, so that the common names cost JavaScript nothing (no
 * string, no object per name: memory stays flat however many entries
 * there are). Reads the root with getdents64 into `buf` (the caller's, kept
 * across calls; out[5] and out[6] are the read position and length in it,
 * 0 and 0 at the start) and handles, until about `budgetUs` have passed:
 *   lock-<id>          reclaim_entry (both directory names): removed,
 *                      live and bytes counted in out[9], out[10], out[11]
 *                      (set by each call); gone: not counted;
 *   <id>, temp-dir-<id>  skipped when lock-<id> exists (its own entry
 *                      decides) or when the name is gone;
 *   . and ..           skipped.
 * Any other name, and a lock-<id> whose reclaim needs the caller (a lease
 * record; out of time with the lock held in out[1] and the bytes so far in
 * out[0]), returns SB_NAME with the name at out[7] (offset in buf) and
 * out[8] (length): the caller handles it, then calls again. A failed reclaim
 * returns SB_ERROR (name likewise; errno, call and path as reclaim's). Codes:
 * SB_END (the root is read), SB_SLICE (out of time), SB_COUNTED (with flag
 * SB_EACH, after each entry counted), SB_READ_ERROR (getdents64: errno in
 * out[2]). The caller must not run it with a mount point of the mount table
 * under the root (those entries need the JavaScript path's fence).
 *
 * With flag SB_BACKGROUND the same loop runs on a thread of libuv's pool
 * and the call returns a promise of the code: the budget only bounds how
 * long the pool thread is kept (SB_SLICE between two entries; an entry is
 * never left half done for it: the event loop is not blocked), and
 * out[12] != 0, set by the caller meanwhile, stops it between two entries
 * (SB_CANCELLED). The caller keeps buf, out and errPath alive and untouched
 * until the promise settles (the addon holds references too).
 */
static int sweep_loop(int root, char *buf, long blen, double *out, char *errpath, int64_t deadline, int flags) {
  long pos = (long)out[5], len = (long)out[6];
  out[0] = 0;
  out[1] = -1;
  out[9] = out[10] = out[11] = 0;
  int code;
  for (;;) {
    if (flags & SB_BACKGROUND) {
      double stop;
      __atomic_load(&out[12], &stop, __ATOMIC_RELAXED); /* written by the JS thread */
      if (stop != 0) {
        code = SB_CANCELLED;
        break;
      }
    }
    if (pos >= len) {
      long n;
      do n = syscall(SYS_getdents64, root, buf, blen);
      while (n < 0 && errno == EINTR);
      if (n < 0) {
        out[2] = errno;
        code = SB_READ_ERROR;
        break;
      }
      pos = 0;
      len = n;
      if (n == 0) {
        code = SB_END;
        break;
      }
    }
    struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + pos);
    long at = pos + (long)offsetof(struct linux_dirent64, d_name);
    pos += d->d_reclen;
    const char *name = d->d_name;
    out[7] = (double)at;
    out[8] = (double)strlen(name);
    int counted = 0;
    code = -1;
    if (name[0] == '.') {
      if (name[1] != '\0' && !(name[1] == '.' && name[2] == '\0')) code = SB_NAME; /* hidden, marker: JS */
    } else if (strncmp(name, LOCK_PREFIX, sizeof LOCK_PREFIX - 1) == 0 && is_id(name + sizeof LOCK_PREFIX - 1)) {
      const char *id = name + sizeof LOCK_PREFIX - 1;
      char dirs[2][NAME_BUF];
      snprintf(dirs[0], NAME_BUF, "%s", id);
      snprintf(dirs[1], NAME_BUF, CS_DIR_PREFIX "%s", id);
      /* An entry started gets 1 ms at least; in the background, all it needs. */
      int64_t grace = flags & SB_BACKGROUND ? INT64_MAX : mono_ns() + 1000000;
      int r = reclaim_entry(root, name, dirs, 2, deadline > grace ? deadline : grace, -1, out, errpath);
      if (r == SW_DONE) {
        out[9]++;
        out[11] += out[0];
        counted = 1;
      } else if (r == SW_LIVE) {
        out[10]++;
        counted = 1;
      } else if (r == SW_ERROR) {
        code = SB_ERROR;
      } else if (r != SW_GONE) {
        code = SB_NAME; /* SW_LEASE, SW_AGAIN (out[0], out[1] say how far) */
      }
      if (code < 0) out[0] = 0;
    } else {
      const char *id = strncmp(name, CS_DIR_PREFIX, sizeof CS_DIR_PREFIX - 1) == 0
                           ? name + sizeof CS_DIR_PREFIX - 1
                           : name;
      if (is_id(id)) {
        char lock_name[NAME_BUF];
        struct stat st;
        snprintf(lock_name, NAME_BUF, LOCK_PREFIX "%s", id);
        if (fstatat(root, lock_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
          /* its lock file's entry decides */
        } else if (errno != ENOENT) {
          code = SB_NAME; /* the caller reports it */
        } else if (fstatat(root, name, &st, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT) {
          code = SB_NAME; /* no lock file: an orphan, or containers/storage's (skipped) */
        }
      } else {
        code = SB_NAME; /* fits neither layout: the caller reports it as skipped */
      }
    }
    if (code >= 0) break;
    if (counted && (flags & SB_EACH)) {
      code = SB_COUNTED;
      break;
    }
    if (mono_ns() >= deadline) {
      code = SB_SLICE;
      break;
    }
  }
  out[5] = (double)pos;
  out[6] = (double)len;
  return code;
}

/* A sweep thread's stack: its walk keeps its directories on the heap. */
#define SWEEP_STACK (256 * 1024)

/* One background run (SB_BACKGROUND), on a thread of its own: not one of
 * libuv's pool, which the process's fs calls share (the contract keeps it
 * free of our long work: docs/contract.md 3.3 item 4). Its end is reported
 * through a threadsafe function made for the run. */
typedef struct sweep_job {
  napi_threadsafe_function tsfn;
  napi_deferred deferred;
  napi_ref refs[3]; /* buf, out, errPath: kept alive while the thread uses them */
  int root, flags, code, budget_us;
  char *buf;
  long blen;
  double *out;
  char *errpath;
} sweep_job;

static void *sweep_thread(void *arg) {
  sweep_job *j = arg;
  pthread_detach(pthread_self());
  j->code = sweep_loop(j->root, j->buf, j->blen, j->out, j->errpath, mono_ns() + (int64_t)j->budget_us * 1000,
                       j->flags);
  napi_threadsafe_function tsfn = j->tsfn;
  /* From here on j is the JS thread's (sweep_done frees it). */
  napi_call_threadsafe_function(tsfn, j, napi_tsfn_blocking);
  napi_release_threadsafe_function(tsfn, napi_tsfn_release);
  return NULL;
}

/* On the JS thread: the run's result, or its failure to start. */
static void sweep_settle(napi_env env, sweep_job *j, int started) {
  napi_value v = NULL;
  if (started) napi_create_int32(env, j->code, &v);
  if (v) {
    napi_resolve_deferred(env, j->deferred, v);
  } else {
    napi_value msg, err;
    napi_create_string_utf8(env, "xlock: the background sweep did not run", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &err);
    napi_reject_deferred(env, j->deferred, err);
  }
  for (int i = 0; i < 3; i++) napi_delete_reference(env, j->refs[i]);
  free(j);
}

static void sweep_done(napi_env env, napi_value cb, void *context, void *data) {
  (void)cb;
  (void)context;
  if (env == NULL) { /* environment torn down */
    free(data);
    return;
  }
  sweep_settle(env, data, 1);
}

napi_value js_sweep(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t root, budget_us, flags;
  if (argc < 6) {
    napi_throw_type_error(env, NULL, "xlock: sweep takes 6 arguments");
    return NULL;
  }
  if (!arg_int(env, argv, argc, 0, "rootFd", &root) || !arg_int(env, argv, argc, 1, "budgetUs", &budget_us) ||
      !arg_int(env, argv, argc, 2, "flags", &flags))
    return NULL;
  void *bdata = NULL, *odata = NULL, *pdata = NULL;
  size_t blen = 0, olen = 0, plen = 0;
  bool is_buf = false;
  napi_typedarray_type tt;
  CHECK(napi_is_buffer(env, argv[3], &is_buf));
  if (!is_buf || napi_get_buffer_info(env, argv[3], &bdata, &blen) != napi_ok || blen < 1024) {
    napi_throw_type_error(env, NULL, "xlock: expected `buf` to be a Buffer of at least 1024 bytes");
    return NULL;
  }
  if (napi_get_typedarray_info(env, argv[4], &tt, &olen, &odata, NULL, NULL) != napi_ok ||
      tt != napi_float64_array || olen < SB_OUT) {
    napi_throw_type_error(env, NULL, "xlock: expected `out` to be a Float64Array of 13");
    return NULL;
  }
  CHECK(napi_is_buffer(env, argv[5], &is_buf));
  if (!is_buf || napi_get_buffer_info(env, argv[5], &pdata, &plen) != napi_ok || plen < PATH_BUF) {
    napi_throw_type_error(env, NULL, "xlock: expected `errPath` to be a Buffer of 4096 bytes");
    return NULL;
  }
  double *out = odata;
  if (!(out[5] >= 0 && out[5] <= out[6] && out[6] <= (double)blen)) {
    napi_throw_type_error(env, NULL, "xlock: sweep's read position is outside `buf`");
    return NULL;
  }
  if (budget_us < 0) budget_us = 0;
  if (!(flags & SB_BACKGROUND)) {
    int64_t deadline = mono_ns() + (int64_t)budget_us * 1000;
    return make_int(env, sweep_loop(root, bdata, (long)blen, out, pdata, deadline, flags));
  }
  if (flags & SB_EACH) {
    napi_throw_type_error(env, NULL, "xlock: a background sweep does not stop after each entry");
    return NULL;
  }
  sweep_job *j = calloc(1, sizeof *j);
  if (!j) {
    napi_throw_error(env, "ENOMEM", "xlock: out of memory");
    return NULL;
  }
  j->root = root;
  j->flags = flags;
  j->budget_us = budget_us;
  j->buf = bdata;
  j->blen = (long)blen;
  j->out = out;
  j->errpath = pdata;
  napi_value promise, name;
  int refs = 0;
  for (; refs < 3; refs++)
    if (napi_create_reference(env, argv[refs == 0 ? 3 : refs == 1 ? 4 : 5], 1, &j->refs[refs]) != napi_ok) break;
  if (refs < 3 || napi_create_promise(env, &j->deferred, &promise) != napi_ok) {
    for (int i = 0; i < refs; i++) napi_delete_reference(env, j->refs[i]);
    free(j);
    napi_throw_error(env, NULL, "xlock: cannot start the background sweep");
    return NULL;
  }
  pthread_t thread;
  if (napi_create_string_utf8(env, "xlock.sweep", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, NULL, NULL, NULL, sweep_done, &j->tsfn) != napi_ok) {
    sweep_settle(env, j, 0); /* rejects */
    return promise;
  }
  if (start_thread_sized(&thread, sweep_thread, j, SWEEP_STACK) != 0) {
    napi_release_threadsafe_function(j->tsfn, napi_tsfn_abort);
    sweep_settle(env, j, 0); /* rejects */
  }
  return promise;
}

/* lookup(rootFd, name) -> 1 when something is at `name` in the root (never
 * followed), 0 when nothing is, -errno. The sweep's "does lock-<id> (or
 * <id>) exist" without a Stats object and an absolute path per name. */
napi_value js_lookup(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t root;
  char name[NAME_BUF];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!arg_int(env, argv, argc, 0, "rootFd", &root)) return NULL;
  if (argc < 2 || !arg_name(env, argv[1], name)) {
    if (argc < 2) napi_throw_type_error(env, NULL, "xlock: lookup takes 2 arguments");
    return NULL;
  }
  struct stat st;
  if (fstatat(root, name, &st, AT_SYMLINK_NOFOLLOW) == 0) return make_int(env, 1);
  return make_int(env, errno == ENOENT ? 0 : -errno);
}
