/*
 * xlock.h: what the files of the kernel-lock addon share (xlock.c: the
 * lock primitives, shared helpers and the module; pool.c/pool.h: blocking
 * lock calls on pooled threads; wait.c: the waits' N-API side; pidwatch.c:
 * watching a process for its exit; lease.c: the lease backend's publish and
 * release; create.c: createLocked's create; reclaim.c/sweep.c/sweep.h: a
 * staging entry's reclaim and the sweep's loop; take.c: taking a lock in one call; record.c: the check after a
 * grant and the owner record; tmpfile.c: O_TMPFILE files). Every symbol is hidden
 * (-fvisibility=hidden) but the module's registration.
 */
#ifndef XLOCK_H
#define XLOCK_H
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
#include <sys/statfs.h>
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

/* The addon's interface version, exported as `abi`: the loader
 * (src/platform/native.ts, ADDON_ABI) refuses an addon built with another
 * one, since the JS side relies on what each export takes and returns (a
 * wait given a path verifies before it resolves, since 2; `take`, since
 * 3; createTmpfile, since 4; `sweep`, since 5). Bump both with
 * any such change. -DXLOCK_ABI=n builds another one (tests). */
#ifndef XLOCK_ABI
#define XLOCK_ABI 5
#endif

#define CHECK(call)                                                            \
  do {                                                                         \
    if ((call) != napi_ok) {                                                   \
      napi_throw_error(env, NULL, "xlock: N-API call failed: " #call);         \
      return NULL;                                                             \
    }                                                                          \
  } while (0)

/* Shared by the files of the addon (xlock.c defines them). */
napi_value make_int(napi_env env, int64_t v);
int arg_int(napi_env env, napi_value *argv, size_t argc, size_t i, const char *name, int32_t *out);
int arg_path(napi_env env, napi_value *argv, size_t argc, size_t i, char *buf);
int arg_record(napi_env env, napi_value *argv, size_t argc, size_t i, void **data, size_t *len,
               int32_t *ours, int32_t *same);
int set_lock(int fd, int type, int wait);
int verify_record(int fd, const char *path, char *data, size_t len, size_t ours, size_t same, int tag_it);
int start_thread(pthread_t *thread, void *(*fn)(void *), void *arg);
/* The same with a stack of `stack` bytes (sweep.c's threads). */
int start_thread_sized(pthread_t *thread, void *(*fn)(void *), void *arg, size_t stack);
/* Whether a file's first `n` bytes start like a lease backend's owner record. */
int is_lease_record(const char *head, size_t n);
/* record.c: verify() and unlinkHeld() (registered by xlock.c). */
napi_value js_verify(napi_env env, napi_callback_info info);
napi_value js_unlink_held(napi_env env, napi_callback_info info);
/* take.c: open + lock + verify_record in one call (registered by xlock.c). */
napi_value js_take(napi_env env, napi_callback_info info);

/* Writes the current time over a record's `createdAt` digits at `same`
 * (when they are there): records are rendered once, stamped at each write. */
void stamp_record(char *data, size_t len, size_t same);
/* Writes all of buf at offset 0: 0 | -1 with errno set. */
int write_all(int fd, const char *buf, size_t len);
/* An unnamed file in `dir` (O_TMPFILE | flags, O_CLOEXEC always): fd |
 * -EOPNOTSUPP where this filesystem or kernel has no O_TMPFILE | -errno. */
int open_tmpfile(const char *dir, int flags, int mode);
/* Links the unnamed file open on `fd` to `path`, never replacing: 0 |
 * -EEXIST | -EOPNOTSUPP (no /proc to link through where AT_EMPTY_PATH is
 * refused) | -errno. `via_proc` (tests): through /proc/self/fd, as kernels
 * before 6.10 need. */
int link_tmpfile(int fd, const char *path, int via_proc);

/* Tests only (setWaitTestGap): pauses that widen a race's window.
 *   XL_GAP_WAIT: between a wait's last cancel check and each blocking call
 *     (a cancel signal landing there is lost: only its re-sending counts);
 *   XL_GAP_CHECK: at the start of the check after a wait's grant, standing
 *     for a check's system call that a signal fails with EINTR (FUSE);
 *   XL_GAP_LEASE: in leaseRelease, between the check that the file is ours
 *     and the rename that moves it aside. */
enum { XL_GAP_WAIT = 0, XL_GAP_CHECK = 1, XL_GAP_LEASE = 2, XL_GAPS = 3 };
/* Pauses for gap `which` when set: 0; or -EINTR when a signal cut it short
 * and `interruptible` (else it sleeps on). */
int test_gap(int which, int interruptible);

/* A wait given a path reports a failed check after the grant as
 * -(XL_VERIFY_FAILED + errno) (wait.c). */
#define XL_VERIFY_FAILED 0x10000

/* wait.c: blocking waits on pooled threads (pool.c). */
napi_value js_wait(napi_env env, napi_callback_info info);
napi_value js_cancel(napi_env env, napi_callback_info info);
napi_value js_trim(napi_env env, napi_callback_info info);

/* lease.c: the lease backend's publish and release, one call each. */
napi_value js_lease_publish(napi_env env, napi_callback_info info);
napi_value js_lease_release(napi_env env, napi_callback_info info);

/* create.c: createLocked's create in one call; its failed lock and link
 * steps report -(XL_CREATE_LOCK + errno), -(XL_CREATE_LINK + errno). */
#define XL_CREATE_LOCK 0x10000
#define XL_CREATE_LINK 0x20000
napi_value js_create_tmpfile(napi_env env, napi_callback_info info);

/* pidwatch.c: watching a process for its exit. */
napi_value js_watch_pid(napi_env env, napi_callback_info info);
napi_value js_unwatch_pid(napi_env env, napi_callback_info info);

/* reclaim.c (reclaim), sweep.c (lookup, sweep): @x/staging's recovery sweep. */
napi_value js_reclaim(napi_env env, napi_callback_info info);
napi_value js_lookup(napi_env env, napi_callback_info info);
napi_value js_sweep(napi_env env, napi_callback_info info);

#endif
