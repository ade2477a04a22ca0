/* pool.c: blocking lock calls on pooled threads (see pool.h). */
#include "pool.h"

/*
 * A job blocks in F_OFD_SETLKW (flock elsewhere) on a thread of a small
 * process-wide pool, never on libuv's threadpool. A pool thread serves one
 * job at a time and parks between jobs; a thread idle for IDLE_SECONDS
 * exits, so a process that stops waiting is back to its own threads. No
 * thread is created or joined per wait.
 *
 * Cancellation (the deadline, or pool_cancel()) interrupts the blocked call
 * with a thread-directed signal whose handler is installed without
 * SA_RESTART (the call fails with EINTR). The signal comes from a per-thread
 * POSIX timer: armed at the deadline, or at once by a cancel, and re-firing
 * every RESEND_NS until the wait ends, so a signal that lands just before
 * the thread enters the call (and is lost) is sent again: no cancellation is
 * lost, and no JS timer runs while waiting. Where such timers (or the
 * signal) are not available, the thread polls with a non-blocking attempt
 * every POLL_NS instead.
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

int64_t pool_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

struct pool_worker {
  pthread_mutex_t mu; /* guards go, cur and the timer */
  pthread_cond_t cv;  /* signalled when go is set */
  int go;             /* a job (or trim's exit) was handed over */
  pool_job *cur;      /* the job being waited for */
  pool_job *next_job; /* handed over by submit (pool_mu) */
  int idle;           /* on the idle list (pool_mu) */
  pool_worker *next;  /* idle list / free list (pool_mu) */
#if XLOCK_TIMERS
  int timer_ok;
  int timer;          /* kernel timer id: raw system calls, so no librt (old glibc) */
  int64_t armed;      /* when the timer fires next (0: disarmed); mu */
#endif
};

/* Worker structs are recycled, never freed: a cancel may look at the worker
 * of a job whose thread has moved on (it then finds another `cur`). */
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static pool_worker *idle_list;
static pool_worker *free_list;
static int pool_threads; /* running pool threads (pool_mu) */

#if XLOCK_TIMERS
/* mu held. Fires at `at` (absolute), then every RESEND_NS; at == 0 disarms. */
static void arm(pool_worker *wk, int64_t at) {
  if (!wk->timer_ok || wk->armed == at) return;
  struct itimerspec its;
  memset(&its, 0, sizeof its);
  if (at != 0) {
    its.it_value.tv_sec = at / 1000000000LL;
    its.it_value.tv_nsec = at % 1000000000LL;
    its.it_interval.tv_nsec = RESEND_NS;
  }
  syscall(SYS_timer_settime, wk->timer, TIMER_ABSTIME, &its, NULL);
  wk->armed = at;
}
#endif

static int wait_result(pool_job *j) {
  if (atomic_load(&j->cancelled)) return -ECANCELED;
  if (j->deadline != 0 && pool_now_ns() >= j->deadline) return -ETIMEDOUT;
  return 1;
}

static int run_job(pool_worker *wk, pool_job *j) {
  int res;
  int signals = 0;
  pthread_mutex_lock(&wk->mu);
  wk->cur = j;
#if XLOCK_TIMERS
  signals = wk->timer_ok;
  /* A timer still armed for an earlier, far deadline is simply re-armed. */
  if (signals && j->deadline != 0) arm(wk, j->deadline);
  else if (signals) arm(wk, 0);
#endif
  pthread_mutex_unlock(&wk->mu);
  for (;;) {
    if ((res = wait_result(j)) != 1) break;
    (void)test_gap(XL_GAP_WAIT, 0);
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
static int park(pool_worker *wk) {
  struct timespec until; /* on wk->cv's clock, CLOCK_MONOTONIC (pool_submit) */
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += IDLE_SECONDS;
  pthread_mutex_lock(&wk->mu);
  while (!wk->go) {
    if (pthread_cond_timedwait(&wk->cv, &wk->mu, &until) != ETIMEDOUT) continue;
    pthread_mutex_unlock(&wk->mu);
    pthread_mutex_lock(&pool_mu);
    if (wk->idle) { /* nothing handed over: leave the idle list */
      pool_worker **pp = &idle_list;
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
static void unpark(pool_worker *wk) {
  pthread_mutex_lock(&wk->mu);
  wk->go = 1;
  pthread_cond_signal(&wk->cv);
  pthread_mutex_unlock(&wk->mu);
}

static void *worker_main(void *arg) {
  pool_worker *wk = arg;
  pthread_detach(pthread_self());
#if XLOCK_TIMERS
  wk->timer_ok = 0;
  wk->armed = 0;
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
    pool_job *j;
    if (!park(wk)) goto out;
    pthread_mutex_lock(&pool_mu);
    j = wk->next_job;
    wk->next_job = NULL;
    pthread_mutex_unlock(&pool_mu);
    if (j == NULL) goto out; /* trim() */
    j->result = run_job(wk, j);
    /* The wait is over: no cancel signal may reach done() (the check after
     * the grant and the record: fstat, lstat, pread, pwrite, ftruncate,
     * which some filesystems fail with EINTR). A cancel from now on only
     * sets j->cancelled, which done() reads after its check. A deadline
     * that passed (or a cancel) keeps re-firing: disarm it. A later one is
     * left armed, which saves a system call per wait: it fires only if done()
     * outlasts it, more than IDLE_SECONDS + 1 from now; the next job re-arms
     * the timer, and a thread left idle deletes it first. */
    pthread_mutex_lock(&wk->mu);
    wk->cur = NULL;
#if XLOCK_TIMERS
    if (wk->armed != 0 && wk->armed < pool_now_ns() + (IDLE_SECONDS + 1) * 1000000000LL) arm(wk, 0);
#endif
    pthread_mutex_unlock(&wk->mu);
    /* From here on the job may be freed. */
    j->done(j);
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
  wk->armed = 0;
  pthread_mutex_unlock(&wk->mu);
#endif
  pthread_mutex_lock(&pool_mu);
  pool_threads--;
  wk->next = free_list;
  free_list = wk;
  pthread_mutex_unlock(&pool_mu);
  return NULL;
}

int pool_submit(pool_job *j) {
  pthread_once(&signal_once, install_signal);
  pthread_mutex_lock(&pool_mu);
  pool_worker *wk = idle_list;
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
    /* park()'s idle timeout runs on CLOCK_MONOTONIC, like the deadlines: a
     * wall-clock step must not end it early or stretch it. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&wk->cv, &ca);
    pthread_condattr_destroy(&ca);
  }
  wk->next_job = j;
  wk->go = 1; /* the new thread starts with its job */
  wk->idle = 0;
  wk->cur = NULL;
  j->wk = wk;
  /* Every signal blocked at start: process-directed signals (SIGINT,
   * SIGCHLD...) never land on a pool thread; it unblocks only its own. */
  pthread_t thread;
  int rc = start_thread(&thread, worker_main, wk);
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

void pool_cancel(pool_job *j) {
  atomic_store(&j->cancelled, 1);
#if XLOCK_TIMERS
  pool_worker *wk = j->wk;
  if (wk == NULL) return;
  pthread_mutex_lock(&wk->mu);
  if (wk->cur == j) arm(wk, pool_now_ns());
  pthread_mutex_unlock(&wk->mu);
#endif
}

int pool_trim(void) {
  pthread_mutex_lock(&pool_mu);
  while (idle_list != NULL) {
    pool_worker *wk = idle_list;
    idle_list = wk->next;
    wk->idle = 0;
    wk->next_job = NULL;
    pthread_mutex_unlock(&pool_mu);
    unpark(wk);
    pthread_mutex_lock(&pool_mu);
  }
  int n = pool_threads;
  pthread_mutex_unlock(&pool_mu);
  return n;
}
