/*
 * sweep.h: what reclaim.c (one staging entry's reclaim) and sweep.c (the
 * sweep's loop over the root) share. docs/staging-protocol.md, "Recovery".
 */
#ifndef XLOCK_SWEEP_H
#define XLOCK_SWEEP_H
#include "xlock.h"

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

/* CLOCK_MONOTONIC in ns. */
int64_t mono_ns(void);
/* reclaim.c: one entry (its lock file and directories), see there. */
int reclaim_entry(int root, const char *lock_name, char dirs[][NAME_BUF], uint32_t ndirs, int64_t deadline,
                  int held, double *out, char *errpath);
/* Reads `v` as a Buffer of at least `min` bytes (TypeError naming `name` otherwise). */
int arg_buffer(napi_env env, napi_value v, size_t min, const char *name, char **data, size_t *len);
/* Reads `v` as a Float64Array of at least `min` elements (TypeError naming `name` otherwise). */
int arg_doubles(napi_env env, napi_value v, size_t min, const char *name, double **data);
/* Reads napi value `v` as one path component (no '/', not empty, not . or ..) into buf. */
int arg_name(napi_env env, napi_value v, char *buf);

#endif
