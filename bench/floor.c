/*
 * The C floor of the benchmark: the raw system-call sequences a lock cycle
 * cannot avoid, timed per operation with CLOCK_MONOTONIC.
 *
 *   floor cycle  <issue|bare|record|full> <path> <n>
 *       issue:  open(O_CREAT|O_RDWR|O_CLOEXEC) + F_OFD_SETLK + fstat
 *               + F_OFD_SETLK(F_UNLCK) + close    (the floor: issue 13's harness)
 *       bare:   open + F_OFD_SETLK + close
 *       record: bare + pwrite(owner record) + ftruncate
 *       full:   record + fstat + lstat (the inode re-check ours does)
 *   floor create <plain|record> <dir> <n>
 *       gap-free create: open(hidden, O_CREAT|O_EXCL) + F_OFD_SETLK
 *       [+ pwrite + ftruncate] + renameat2(RENAME_NOREPLACE) + unlink + close
 *
 * Prints one line per operation: its duration in nanoseconds. Built at
 * bench time with `cc -O2` (bench/lib/floor.mjs).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* About the size of the owner record @x/core writes. */
static const char record[] =
    "{\"v\":1,\"backend\":\"kernel\",\"pid\":123456,\"hostname\":\"bench-host\","
    "\"bootId\":\"0f6b6f1e-8f3a-4c57-9a55-1d3f0b8e2c11\",\"pidNs\":\"pid:[4026531836]\","
    "\"startTicks\":123456,\"createdAt\":1763884800000}\n";

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what, const char *path) {
  fprintf(stderr, "floor: %s %s: %s\n", what, path, strerror(errno));
  exit(1);
}

static void ofd_lock(int fd, const char *path) {
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
  if (fcntl(fd, F_OFD_SETLK, &fl) < 0) die("F_OFD_SETLK", path);
}

static void write_record(int fd, const char *path) {
  if (pwrite(fd, record, sizeof record - 1, 0) != (ssize_t)(sizeof record - 1)) die("pwrite", path);
  if (ftruncate(fd, sizeof record - 1) < 0) die("ftruncate", path);
}

static void cycle(const char *mode, const char *path) {
  int fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0644);
  if (fd < 0) die("open", path);
  ofd_lock(fd, path);
  if (strcmp(mode, "issue") == 0) {
    struct stat st;
    if (fstat(fd, &st) < 0) die("fstat", path);
    struct flock fl = {.l_type = F_UNLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if (fcntl(fd, F_OFD_SETLK, &fl) < 0) die("F_OFD_SETLK", path);
  } else if (strcmp(mode, "bare") != 0) {
    if (strcmp(mode, "full") == 0) {
      struct stat a, b;
      if (fstat(fd, &a) < 0) die("fstat", path);
      if (lstat(path, &b) < 0) die("lstat", path);
      if (a.st_ino != b.st_ino || a.st_nlink == 0) die("inode check", path);
    }
    write_record(fd, path);
  }
  if (close(fd) < 0) die("close", path);
}

static void create(const char *mode, const char *dir, long i) {
  char hidden[4096], final[4096];
  snprintf(hidden, sizeof hidden, "%s/.floor-%d-%ld.tmp", dir, (int)getpid(), i);
  snprintf(final, sizeof final, "%s/lock-floor-%d-%ld", dir, (int)getpid(), i);
  int fd = open(hidden, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) die("open", hidden);
  ofd_lock(fd, hidden);
  if (strcmp(mode, "record") == 0) write_record(fd, hidden);
  if (renameat2(AT_FDCWD, hidden, AT_FDCWD, final, RENAME_NOREPLACE) < 0) die("renameat2", final);
  if (unlink(final) < 0) die("unlink", final);
  if (close(fd) < 0) die("close", final);
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: floor cycle <issue|bare|record|full> <path> <n> | floor create <plain|record> <dir> <n>\n");
    return 64;
  }
  const char *kind = argv[1], *mode = argv[2], *path = argv[3];
  long n = strtol(argv[4], NULL, 10);
  int is_cycle = strcmp(kind, "cycle") == 0;
  if (!is_cycle && strcmp(kind, "create") != 0) return 64;
  long long *t = malloc(sizeof *t * (size_t)(n > 0 ? n : 1));
  if (!t) return 1;
  /* A few untimed warm-up operations (page cache, dentries). */
  for (long i = 0; i < 5; i++) is_cycle ? cycle(mode, path) : create(mode, path, -1 - i);
  for (long i = 0; i < n; i++) {
    long long t0 = now_ns();
    is_cycle ? cycle(mode, path) : create(mode, path, i);
    t[i] = now_ns() - t0;
  }
  for (long i = 0; i < n; i++) printf("%lld\n", t[i]);
  free(t);
  return 0;
}
