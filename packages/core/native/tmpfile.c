/*
 * tmpfile.c: unnamed files (O_TMPFILE) written and linked under a name in
 * one step, shared by the lease's publish (lease.c) and createLocked
 * (create.c); xlock.h says what each returns.
 */
#include "xlock.h"

/* Unnamed files (lease.c, create.c): see xlock.h. */
#ifdef O_TMPFILE
int open_tmpfile(const char *dir, int flags, int mode) {
  int fd;
  do fd = open(dir, O_TMPFILE | flags | O_CLOEXEC, (mode_t)mode);
  while (fd < 0 && errno == EINTR);
  if (fd >= 0) return fd;
  /* EISDIR/EINVAL: kernels before 3.11, which do not know the flag. */
  if (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL) return -EOPNOTSUPP;
  return -errno;
}
#else
int open_tmpfile(const char *dir, int flags, int mode) { return -EOPNOTSUPP; }
#endif

int write_all(int fd, const char *buf, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pwrite(fd, buf + done, len - done, (off_t)done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (n == 0) {
      errno = EIO;
      return -1;
    }
    done += (size_t)n;
  }
  return 0;
}

/* Whether linkat(fd, "", ..., AT_EMPTY_PATH) links an O_TMPFILE file here:
 * since Linux 6.10 for a file the process opened itself, before only with
 * CAP_DAC_READ_SEARCH (ENOENT otherwise). Cleared the first time it fails
 * where /proc/self/fd works; it saves /proc's path lookup (a third of the
 * link's cost). */
static atomic_int empty_path_links = 1;

int link_tmpfile(int fd, const char *path, int via_proc) {
  if (!via_proc && atomic_load(&empty_path_links)) {
    if (linkat(fd, "", AT_FDCWD, path, AT_EMPTY_PATH) == 0) return 0;
    if (errno != ENOENT) return -errno;
  }
  char self[64];
  snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
  if (linkat(AT_FDCWD, self, AT_FDCWD, path, AT_SYMLINK_FOLLOW) == 0) {
    if (!via_proc) atomic_store(&empty_path_links, 0);
    return 0;
  }
  /* ENOENT: the directory went away, or there is no /proc to link through. */
  if (errno == ENOENT && access("/proc/self/fd", X_OK) < 0) return -EOPNOTSUPP;
  return -errno;
}

