/* wait.c: the addon's blocking waits, wait()/cancel(), on pooled threads (pool.c). */
#include "pool.h"

/*
 * Each environment (main thread, worker) has one threadsafe function,
 * created at its first wait and referenced only while it has waits pending,
 * that resolves the waits' promises. A wait given the lock file's path
 * checks, still on the pool thread and before reporting, that the locked
 * inode is the one at the path and writes the owner record (verify_record,
 * xlock.c): the JS side wakes up to a lock that is ready to hand out.
 * docs/waiting.md describes the machinery.
 */

typedef struct envstate envstate;

typedef struct job {
  pool_job base;      /* first: a pool_job* is a job* */
  napi_deferred deferred;
  envstate *es;
  struct job *next;   /* the environment's pending list (its JS thread only) */
  char *path;         /* verify after the grant (NULL: report the lock only) */
  size_t rec_len, ours, same;
  char rec[];         /* the owner record (rec_len bytes) */
} job;

struct envstate {
  napi_threadsafe_function tsfn;
  job *pending;         /* JS thread only */
  int npending;         /* JS thread only */
  atomic_int in_flight; /* jobs a pool thread may still touch */
};

/* On the pool thread, once the wait has ended (no cancel signal can
 * interrupt the check any more: pool.h). A cancel that came during the
 * check still wins: the lock is released and the wait reports it. */
static void job_done(pool_job *pj) {
  job *j = (job *)pj;
  envstate *es = j->es;
  if (pj->result == 0) {
    if (j->path != NULL) {
      int v = test_gap(XL_GAP_CHECK, 1);
      if (v == 0) v = verify_record(pj->fd, j->path, j->rec_len ? j->rec : NULL, j->rec_len, j->ours, j->same, 0);
      pj->result = v >= 0 ? v : v - XL_VERIFY_FAILED;
    }
    if (atomic_load(&pj->cancelled)) {
      set_lock(pj->fd, XL_UNLOCK | (pj->type & XL_FLOCK), 0);
      pj->result = -ECANCELED;
    }
  }
  napi_call_threadsafe_function(es->tsfn, j, napi_tsfn_nonblocking);
  atomic_fetch_sub(&es->in_flight, 1);
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
  napi_value v = make_int(env, j->base.result);
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
    for (job *j = es->pending; j != NULL; j = j->next) pool_cancel(&j->base);
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
    if (j->base.fd == fd) return j;
  return NULL;
}

/* wait(fd, type, timeoutMs[, path[, record, ours, same]]) -> Promise<number>.
 * Without `path`: 0 once the lock is held, -ETIMEDOUT after timeoutMs (a
 * negative timeoutMs: no timeout), -ECANCELED after cancel(fd), or another
 * -errno. With `path`, a granted lock is verified before the promise
 * resolves (xlock.c's verify(), the owner record `record` included): it
 * resolves verify()'s result (0..3: the lock is held), or
 * -(XL_VERIFY_FAILED + errno) when fstat/lstat failed (held too). One
 * pending wait per descriptor. */
napi_value js_wait(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7], promise;
  int32_t fd, type, ours = 0, same = 0;
  double timeout = -1;
  char path[PATH_BUF];
  int pr = 0;
  void *data = NULL;
  size_t len = 0;
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
  if (argc >= 4) {
    if ((pr = arg_path(env, argv, argc, 3, path)) == 0) return NULL;
    if (pr < 0) { /* too long: lstat would fail the same way after the wait */
      napi_throw_range_error(env, "ENAMETOOLONG", "xlock: `path` is too long");
      return NULL;
    }
    if (!arg_record(env, argv, argc, 4, &data, &len, &ours, &same)) return NULL;
  }
  if (find_job(env, fd) != NULL) {
    napi_throw_error(env, "EBUSY", "xlock: a wait on this descriptor is already pending");
    return NULL;
  }
  envstate *es = env_state(env);
  size_t plen = pr > 0 ? strlen(path) + 1 : 0;
  job *j = es ? calloc(1, sizeof *j + len + plen) : NULL;
  if (j == NULL) {
    napi_throw_error(env, "ENOMEM", "xlock: out of memory");
    return NULL;
  }
  j->base.fd = fd;
  j->base.type = type;
  j->base.done = job_done;
  /* Beyond ~292 years nothing fires: treat as no timeout. */
  if (timeout >= 0 && timeout < 9e12) j->base.deadline = pool_now_ns() + (int64_t)(timeout * 1e6) + 1;
  j->es = es;
  if (pr > 0) {
    memcpy(j->rec, data, len);
    j->rec_len = len;
    j->ours = (size_t)ours;
    j->same = (size_t)same;
    j->path = j->rec + len;
    memcpy(j->path, path, plen);
  }
  if (napi_create_promise(env, &j->deferred, &promise) != napi_ok) {
    free(j);
    napi_throw_error(env, NULL, "xlock: cannot create a promise");
    return NULL;
  }
  atomic_fetch_add(&es->in_flight, 1);
  int rc = pool_submit(&j->base);
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
napi_value js_cancel(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!arg_int(env, argv, argc, 0, "fd", &fd)) return NULL;
  job *j = find_job(env, fd);
  if (j != NULL) pool_cancel(&j->base);
  return NULL;
}

/* trimWaitThreads() -> how many pool threads are still running. Idle ones
 * are asked to exit now (tests use it to see the thread count come back). */
napi_value js_trim(napi_env env, napi_callback_info info) {
  (void)info;
  return make_int(env, pool_trim());
}
