/*
 * sweep.c: the sweep's loop over the root in native steps (@x/staging's
 * recover(), docs/staging-protocol.md "Recovery"): getdents64 into one
 * reused buffer per lane, each lock-<id> reclaimed (reclaim.c), each
 * <id>/temp-dir-<id> whose lock file exists (or that is gone) left to its
 * lock file's entry; only the other names reach JS. In slices on the JS
 * thread, or in turns on native threads of its own (SB_BACKGROUND).
 */
#include "sweep.h"

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
  char *bdata, *pdata;
  size_t blen = 0;
  double *out;
  if (!arg_buffer(env, argv[3], 1024, "buf", &bdata, &blen) || !arg_doubles(env, argv[4], SB_OUT, "out", &out) ||
      !arg_buffer(env, argv[5], PATH_BUF, "errPath", &pdata, NULL))
    return NULL;
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
