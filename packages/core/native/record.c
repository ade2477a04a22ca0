/*
 * record.c: the check after a lock is granted (is the locked inode still
 * the linked one at the path: docs/contract.md 3.3 item 2) and the owner
 * record it writes (verify_record), with verify() and unlinkHeld() for JS.
 * Called on the JS thread (verify, take.c) and on pool threads (wait.c).
 */
#include "xlock.h"

/* 0 when `fd`'s inode is the one at `path` (and, with `linked`, still
 * linked); 1 when it is not; -errno when fstat/lstat fail otherwise. `a`
 * receives fd's stat. */
static int held_at(int fd, const char *path, struct stat *a, int linked) {
  struct stat b;
  int r;
  /* EINTR: a filesystem (FUSE) that fails a call on a signal; no signal of
   * ours should arrive here (pool.c), but a check must not fail on one. */
  do r = fstat(fd, a);
  while (r < 0 && errno == EINTR);
  if (r < 0) return -errno;
  if (linked && a->st_nlink == 0) return 1;
  do r = lstat(path, &b);
  while (r < 0 && errno == EINTR);
  if (r < 0) return errno == ENOENT ? 1 : -errno;
  return a->st_dev == b.st_dev && a->st_ino == b.st_ino ? 0 : 1;
}

/* Whether the file starts like a lease backend's record: a lease holds no
 * kernel lock, so a kernel acquirer must judge it instead of taking the file
 * (docs/installing.md, "Mixing backends"). `head` is the file's first `n`
 * bytes (verify reads them once, only for a file that is not empty). */
static const char lease_prefix[] = "{\"v\":1,\"backend\":\"lease\"";
#define LEASE_PREFIX_LEN (sizeof lease_prefix - 1)
int is_lease_record(const char *head, size_t n) {
  return n >= LEASE_PREFIX_LEN && memcmp(head, lease_prefix, LEASE_PREFIX_LEN) == 0;
}

/* Writes the current time (ms since the epoch, CLOCK_REALTIME) over the 13
 * digits of `createdAt` at `same`, when they are there: a record is rendered
 * once and re-stamped at each write. */
void stamp_record(char *data, size_t len, size_t same) {
  if (same + 13 >= len) return;
  for (size_t i = same; i < same + 13; i++)
    if (data[i] < '0' || data[i] > '9') return;
  if (data[same + 13] >= '0' && data[same + 13] <= '9') return;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  if (ms < 1000000000000LL || ms > 9999999999999LL) return;
  for (size_t i = same + 13; i-- > same; ms /= 10) data[i] = (char)('0' + ms % 10);
}

/* The nanoseconds of the modification time a record's writer sets right
 * after writing it (its seconds: the current time): a value derived from
 * the record's naming bytes (pid, host, start time...), never 0. Any later
 * write, by anyone, sets the modification time to the current time, so a
 * file of the record's length whose nanoseconds still match was last
 * written by this holder, and a re-take need not read it (issue 13: "no
 * owner-record write is needed when the file already names us"). A
 * filesystem that keeps no nanoseconds (or a file we may not set times on)
 * never matches: the record is read, as before. A false match needs another
 * writer's timestamp to hit the same one of 999,999,999 values. The file's
 * device and inode number are part of it, so a time copied from a tagged
 * file onto another (touch -r, cp -p) does not match there. */
static long record_tag(const char *data, size_t same, const struct stat *st) {
  uint64_t h = 14695981039346656037ULL; /* FNV-1a */
  for (size_t i = 0; i < same; i++) {
    h ^= (unsigned char)data[i];
    h *= 1099511628211ULL;
  }
  /* And the file itself: a tagged time copied onto another file (touch -r,
   * cp -p) does not carry over. */
  uint64_t id[2] = {(uint64_t)st->st_dev, (uint64_t)st->st_ino};
  for (size_t i = 0; i < sizeof id; i++) {
    h ^= ((const unsigned char *)id)[i];
    h *= 1099511628211ULL;
  }
  long tag = 1 + (long)(h % 999999999ULL);
  /* Never a whole microsecond: times set from JS (a lease's heartbeat,
   * touch) are whole microseconds or milliseconds. */
  return tag % 1000 == 0 ? tag + 1 : tag;
}

/* Sets the modification time to now's seconds and `tag`'s nanoseconds.
 * Only the file's owner may set a time (EPERM otherwise): then there is no
 * tag, and the next take reads the record, as before. */
static void set_tag(int fd, long tag) {
  struct timespec now, ts[2] = {{0, UTIME_OMIT}, {0, tag}};
  clock_gettime(CLOCK_REALTIME, &now);
  ts[1].tv_sec = now.tv_sec;
  (void)futimens(fd, ts);
}

/* After a lock is granted: is the locked inode still linked and still the
 * one at `path`? The unlink race (docs/contract.md 3.3 item 2) hinges on this check.
 * Returns 0 | 1 (not the linked inode at path) | 2 (a lease file: nothing
 * written, the caller judges the lease) | 3 (foreign content: nothing
 * written) | -errno. When it is and a record is given (`data`, `len`), the
 * owner record goes into the file, using the size from the same fstat (no
 * separate stat per lock):
 *   - an empty file gets the record;
 *   - a file whose first `ours` bytes differ from the record's (not one of
 *     our records: podman's last-writer token, a pid file) is another
 *     program's: never written or truncated, and 3 tells the caller so;
 *   - a file that already holds this record up to byte `same` (the same
 *     holder: pid, host, start time) and has its length is left as it is
 *     (repeated acquisitions by one process cost no write);
 *   - else the record, stamped with the current time (stamp_record), is
 *     written with pwrite, then only a longer old record is truncated
 *     (truncating to the same size still costs a journalled inode update on
 *     ext4), so a concurrent reader sees the old record, the new one, or
 *     the new one with a tail it must tolerate.
 * The content check reads the file (pread) only when it is not empty and
 * its modification time does not carry this record's tag (record_tag). The
 * record is informational: a failed write (a full disk) does not fail the
 * lock. Called on the JS thread (verify(), take()) and on pool threads (a
 * wait given a path, wait.c). With `tag_it`, a record written (or found
 * ours but untagged) gets its tag (set_tag); a wait's grant passes 0, so
 * the hand-off between processes costs no extra call: the record is tagged
 * on this process's next take, if any. See docs/interop.md ("Foreign lock files"). */
int verify_record(int fd, const char *path, char *data, size_t len, size_t ours, size_t same, int tag_it) {
  struct stat a;
  int held = held_at(fd, path, &a, 1);
  if (held != 0) return held;
  long tag = data != NULL ? record_tag(data, same, &a) : 0;
  /* Last written by this holder (see record_tag): nothing to read. */
  if (data != NULL && a.st_size == (off_t)len && a.st_mtim.tv_nsec == tag) return 0;
  if (a.st_size > 0) {
    /* One pread of the head serves both checks (lease, foreign/same). */
    char head[512];
    size_t want = len > LEASE_PREFIX_LEN ? len : LEASE_PREFIX_LEN;
    if (want > sizeof head) want = sizeof head;
    ssize_t r;
    do r = pread(fd, head, want, 0);
    while (r < 0 && errno == EINTR);
    if (r < 0) return 0; /* unreadable (write-only): leave it */
    if (is_lease_record(head, (size_t)r)) return 2;
    if (data != NULL) {
      if ((size_t)r < ours || memcmp(head, data, ours) != 0) return 3;
      if (a.st_size == (off_t)len && same <= (size_t)r && memcmp(head, data, same) == 0) {
        /* Ours, untagged (a wait's grant wrote it): tag it once. Not where
         * the time kept has no nanoseconds below a microsecond (seconds-
         * only filesystems, FAT...): a tag never holds there. */
        if (tag_it && a.st_mtim.tv_nsec % 1000 != 0) set_tag(fd, tag);
        return 0;
      }
    }
  }
  if (data != NULL) {
    stamp_record(data, len, same);
    ssize_t w;
    do w = pwrite(fd, data, len, 0);
    while (w < 0 && errno == EINTR);
    if (w == (ssize_t)len && a.st_size > (off_t)len) {
      int t;
      do t = ftruncate(fd, (off_t)len);
      while (t < 0 && errno == EINTR);
    }
    if (w == (ssize_t)len && tag_it) set_tag(fd, tag);
  }
  return 0;
}

/* Reads the optional owner record at argv[i..i+2] (record Buffer, ours,
 * same): 1 (data stays NULL when argv[i] is missing or undefined), or 0
 * after throwing. */
int arg_record(napi_env env, napi_value *argv, size_t argc, size_t i, void **data, size_t *len,
               int32_t *ours, int32_t *same) {
  napi_valuetype t;
  *data = NULL;
  *len = 0;
  if (argc <= i || napi_typeof(env, argv[i], &t) != napi_ok || t == napi_undefined) return 1;
  if (napi_get_buffer_info(env, argv[i], data, len) != napi_ok) {
    napi_throw_type_error(env, NULL, "xlock: expected `record` to be a Buffer");
    return 0;
  }
  if (!arg_int(env, argv, argc, i + 1, "ours", ours) || !arg_int(env, argv, argc, i + 2, "same", same))
    return 0;
  if (*ours < 0 || *same < 0 || (size_t)*ours > *len || (size_t)*same > *len) {
    napi_throw_range_error(env, NULL, "xlock: `ours` and `same` must lie within the record");
    return 0;
  }
  return 1;
}

/* verify(fd, path[, record, ours, same]) -> verify_record()'s result. The
 * record Buffer is stamped in place. */
napi_value js_verify(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  char path[PATH_BUF];
  int32_t fd, ours = 0, same = 0;
  void *data = NULL;
  size_t len = 0;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int pr = 0;
  if (!arg_int(env, argv, argc, 0, "fd", &fd) ||
      (pr = arg_path(env, argv, argc, 1, path)) == 0)
    return NULL;
  if (pr < 0) return make_int(env, pr);
  if (!arg_record(env, argv, argc, 2, &data, &len, &ours, &same)) return NULL;
  return make_int(env, verify_record(fd, path, data, len, (size_t)ours, (size_t)same, 1));
}

/* unlinkHeld(fd, path) -> 0 | 1 (not ours: left alone) | -errno. Deletes the
 * path only while it is still the inode we hold: never a file we do not hold. */
napi_value js_unlink_held(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  char path[PATH_BUF];
  int32_t fd;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int pr = 0;
  if (!arg_int(env, argv, argc, 0, "fd", &fd) ||
      (pr = arg_path(env, argv, argc, 1, path)) == 0)
    return NULL;
  if (pr < 0) return make_int(env, pr);
  struct stat a;
  int same = held_at(fd, path, &a, 0);
  if (same != 0) return make_int(env, same);
  if (unlink(path) < 0) return make_int(env, errno == ENOENT ? 1 : -errno);
  return make_int(env, 0);
}

