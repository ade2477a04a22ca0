/*
 * reclaim.c: the per-entry work of @x/staging's recovery sweep in one call
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
#include "sweep.h"
#include <dirent.h>
#include <stddef.h>

int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}



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
int reclaim_entry(int root, const char *lock_name, char dirs[][NAME_BUF], uint32_t ndirs, int64_t deadline,
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
int arg_name(napi_env env, napi_value v, char *buf) {
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

int arg_buffer(napi_env env, napi_value v, size_t min, const char *name, char **data, size_t *len) {
  bool is_buf = false;
  void *d = NULL;
  size_t n = 0;
  if (napi_is_buffer(env, v, &is_buf) != napi_ok || !is_buf || napi_get_buffer_info(env, v, &d, &n) != napi_ok ||
      n < min) {
    char msg[128];
    snprintf(msg, sizeof msg, "xlock: expected `%s` to be a Buffer of at least %zu bytes", name, min);
    napi_throw_type_error(env, NULL, msg);
    return 0;
  }
  *data = d;
  if (len) *len = n;
  return 1;
}

int arg_doubles(napi_env env, napi_value v, size_t min, const char *name, double **data) {
  napi_typedarray_type t;
  size_t n = 0;
  void *d = NULL;
  if (napi_get_typedarray_info(env, v, &t, &n, &d, NULL, NULL) != napi_ok || t != napi_float64_array || n < min) {
    char msg[128];
    snprintf(msg, sizeof msg, "xlock: expected `%s` to be a Float64Array of %zu", name, min);
    napi_throw_type_error(env, NULL, msg);
    return 0;
  }
  *data = d;
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
  double *out;
  char *errpath;
  if (!arg_doubles(env, argv[5], 5, "out", &out) || !arg_buffer(env, argv[6], PATH_BUF, "errPath", &errpath, NULL))
    return NULL;
  return make_int(env, reclaim_entry(root, lock_name, dirs, ndirs,
                                     mono_ns() + (int64_t)(budget_us > 0 ? budget_us : 0) * 1000, held,
                                     out, errpath));
}

