/* wait.c: blocking waits of the kernel-lock addon on pooled threads (see xlock.h). */
#include "xlock.h"

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
napi_value js_wait(napi_env env, napi_callback_info info) {
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
napi_value js_cancel(napi_env env, napi_callback_info info) {
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
napi_value js_trim(napi_env env, napi_callback_info info) {
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
napi_value js_test_gap(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t ns;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!arg_int(env, argv, argc, 0, "ns", &ns)) return NULL;
  atomic_store(&test_gap_ns, ns);
  return NULL;
}
