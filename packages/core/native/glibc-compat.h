/*
 * Prebuilds for glibc are linked on a new glibc but must load on every glibc
 * Node 20 supports (2.28 and later). The linker would record the newest
 * version of each symbol (pthread_* moved into libc at 2.34 and got new
 * versions; fstat/lstat became real symbols at 2.33), so a prebuild would
 * refuse to load on Debian 11, Ubuntu 20.04 or RHEL 8. Here every libc
 * function the addon calls is bound to its oldest version, which every glibc
 * still exports. Included only by prebuilds (-DXLOCK_GLIBC_COMPAT); the test
 * `test/prebuild.test.ts` fails, naming the symbol, when a call is added that
 * needs a newer glibc than 2.28 (then add it to the list below).
 */
#ifndef XLOCK_GLIBC_COMPAT_H
#define XLOCK_GLIBC_COMPAT_H
#include <sys/stat.h>

#if defined(__x86_64__)
#define XL_GLIBC_BASE "GLIBC_2.2.5"
#define XL_GLIBC_AT "GLIBC_2.4" /* the *at calls came later on x86-64 */
#define XL_STAT_VER 1 /* _STAT_VER_LINUX */
#elif defined(__aarch64__)
#define XL_GLIBC_BASE "GLIBC_2.17"
#define XL_GLIBC_AT "GLIBC_2.17"
#define XL_STAT_VER 0 /* _STAT_VER_KERNEL */
#else
#error "glibc-compat.h: add this architecture's base symbol version"
#endif

#define XL_OLDEST(sym) __asm__(".symver " #sym "," #sym "@" XL_GLIBC_BASE)
XL_OLDEST(pthread_create);
XL_OLDEST(pthread_join);
XL_OLDEST(pthread_kill);
XL_OLDEST(pthread_once);
XL_OLDEST(pthread_sigmask);
XL_OLDEST(pthread_attr_setstacksize);
XL_OLDEST(pthread_mutex_lock);
XL_OLDEST(pthread_mutex_unlock);
/* Condition variables: x86_64's base versions are the compat ones of
 * glibc's pre-2.3.2 condvars, which ignore a condattr's clock (park() in
 * pool.c waits on CLOCK_MONOTONIC); take the current implementation, there
 * since 2.3.2. aarch64 starts at 2.17 with it. */
#if defined(__x86_64__)
#define XL_COND(sym) __asm__(".symver " #sym "," #sym "@GLIBC_2.3.2")
#define XL_CONDATTR_CLOCK "GLIBC_2.3.3"
#else
#define XL_COND(sym) XL_OLDEST(sym)
#define XL_CONDATTR_CLOCK XL_GLIBC_BASE
#endif
XL_COND(pthread_cond_wait);
XL_COND(pthread_cond_signal);
XL_COND(pthread_cond_broadcast);
XL_COND(pthread_cond_timedwait);
XL_COND(pthread_cond_init);
XL_COND(pthread_cond_destroy);
__asm__(".symver pthread_condattr_setclock,pthread_condattr_setclock@" XL_CONDATTR_CLOCK);
XL_OLDEST(pthread_condattr_init);
XL_OLDEST(pthread_condattr_destroy);
XL_OLDEST(pthread_mutex_init);
XL_OLDEST(pthread_mutex_destroy);
XL_OLDEST(pthread_detach);
XL_OLDEST(pthread_self);

/* Before 2.33, fstat/lstat/fstatat were inline wrappers of __fxstat & co. */
int __fxstat(int ver, int fd, struct stat *st);
int __lxstat(int ver, const char *path, struct stat *st);
int __fxstatat(int ver, int dirfd, const char *path, struct stat *st, int flags);
XL_OLDEST(__fxstat);
XL_OLDEST(__lxstat);
__asm__(".symver __fxstatat,__fxstatat@" XL_GLIBC_AT);
#define fstat(fd, st) __fxstat(XL_STAT_VER, (fd), (st))
#define lstat(path, st) __lxstat(XL_STAT_VER, (path), (st))
#define fstatat(dirfd, path, st, flags) __fxstatat(XL_STAT_VER, (dirfd), (path), (st), (flags))
#endif
