/*
 * pool.h: blocking lock calls on a small process-wide pool of threads
 * (pool.c), shared by the N-API waits (wait.c). Nothing here knows N-API:
 * a job says which lock to wait for, until when, and what to call (on the
 * pool thread) once it has ended. docs/waiting.md describes the machinery.
 */
#ifndef XLOCK_POOL_H
#define XLOCK_POOL_H
#include "xlock.h"

typedef struct pool_worker pool_worker;
typedef struct pool_job pool_job;

struct pool_job {
  int fd;
  int type;          /* XL_* lock type */
  int64_t deadline;  /* CLOCK_MONOTONIC ns; 0 = none */
  atomic_int cancelled;
  int result;        /* 0 (held) | -ETIMEDOUT | -ECANCELED | -errno; set before done() */
  /* Called on the pool thread once the wait has ended, with no cancel
   * signal pending or to come (`cancelled` may still be set meanwhile);
   * from then on the pool never touches the job again (done may hand it to
   * another thread that frees it). */
  void (*done)(pool_job *j);
  pool_worker *wk;   /* set once when handed to a thread (cancel reads it) */
};

int64_t pool_now_ns(void);

/* Hands `j` to an idle pool thread, or to a new one. 0 | an errno (then
 * done() is never called). */
int pool_submit(pool_job *j);

/* Asks the wait of `j` to stop (any thread; idempotent). */
void pool_cancel(pool_job *j);

/* Asks idle pool threads to exit now; returns how many are still running. */
int pool_trim(void);

#endif
