/* pidwatch.c: watching a process for its exit (see xlock.h). */
#include "xlock.h"

/* ---- Watching a process for its exit ------------------------------------ */

/* watchPid(pid, callback(result)) -> handle | -errno. A lock taken on behalf
 * of another process (`pid` option) is released when that process exits
 * (Julia's mkpidlock(path, pid)). pidfd_open(2) gives a descriptor that
 * becomes readable when the process exits (a zombie counts: it has exited),
 * and, unlike kill(pid, 0), never mistakes a reused pid for the original. A
 * dedicated thread (64 KiB stack, every signal blocked) polls it together
 * with an eventfd that unwatchPid() writes to; the callback receives 0 when
 * the process exited, -ECANCELED after unwatchPid(). -ENOSYS (kernels before
 * 5.3, other systems) and -ESRCH (already gone) are returned at once. The
 * watch does not keep the event loop alive. */
#if defined(__linux__) && defined(SYS_pidfd_open)
#include <poll.h>
#include <sys/eventfd.h>

typedef struct pidwatch {
  int pidfd;
  int wakefd;
  pthread_t thread;
  atomic_int finished;
  int result;
  int joined; /* main thread only */
  int refs;   /* main thread only: the thread's report + the JS handle */
  napi_threadsafe_function tsfn;
} pidwatch;

static void pidwatch_unref(pidwatch *w) {
  if (--w->refs == 0) free(w);
}

static void pidwatch_join(pidwatch *w) {
  if (!w->joined) {
    pthread_join(w->thread, NULL);
    w->joined = 1;
    close(w->pidfd);
    close(w->wakefd);
  }
}

static void *pidwatch_thread(void *arg) {
  pidwatch *w = arg;
  struct pollfd fds[2] = {{w->pidfd, POLLIN, 0}, {w->wakefd, POLLIN, 0}};
  int r;
  do r = poll(fds, 2, -1);
  while (r < 0 && errno == EINTR);
  w->result = r < 0 ? -errno : (fds[0].revents != 0 ? 0 : -ECANCELED);
  atomic_store(&w->finished, 1);
  napi_call_threadsafe_function(w->tsfn, w, napi_tsfn_blocking);
  napi_release_threadsafe_function(w->tsfn, napi_tsfn_release);
  return NULL;
}

static void pidwatch_cleanup_hook(void *arg);

static void pidwatch_call_js(napi_env env, napi_value cb, void *context, void *data) {
  pidwatch *w = data;
  (void)context;
  if (env == NULL) {
    /* Environment torn down: the cleanup hook joined the thread; drop its report's reference. */
    pidwatch_unref(w);
    return;
  }
  pidwatch_join(w);
  napi_remove_env_cleanup_hook(env, pidwatch_cleanup_hook, w);
  napi_value argv[1], undefined;
  argv[0] = make_int(env, w->result);
  napi_get_undefined(env, &undefined);
  napi_call_function(env, undefined, cb, 1, argv, NULL);
  pidwatch_unref(w);
}

static void pidwatch_wake(pidwatch *w) {
  uint64_t one = 1;
  if (!w->joined && !atomic_load(&w->finished)) (void)!write(w->wakefd, &one, sizeof one);
}

/* A worker thread exiting with a watch pending: stop the thread first. */
static void pidwatch_cleanup_hook(void *arg) {
  pidwatch *w = arg;
  pidwatch_wake(w);
  pidwatch_join(w);
}

static void pidwatch_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  pidwatch_unref(data);
}

napi_value js_watch_pid(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], name, handle;
  int32_t pid;
  napi_valuetype t;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (!arg_int(env, argv, argc, 0, "pid", &pid)) return NULL;
  if (argc < 2 || napi_typeof(env, argv[1], &t) != napi_ok || t != napi_function) {
    napi_throw_type_error(env, NULL, "xlock: expected `callback` to be a function");
    return NULL;
  }
  int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
  if (pidfd < 0) return make_int(env, -errno);
  (void)fcntl(pidfd, F_SETFD, FD_CLOEXEC);
  int wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wakefd < 0) {
    int e = errno;
    close(pidfd);
    return make_int(env, -e);
  }
  pidwatch *w = calloc(1, sizeof *w);
  if (w == NULL) {
    close(pidfd);
    close(wakefd);
    return make_int(env, -ENOMEM);
  }
  w->pidfd = pidfd;
  w->wakefd = wakefd;
  w->refs = 2;
  CHECK(napi_create_string_utf8(env, "xlock.watchPid", NAPI_AUTO_LENGTH, &name));
  if (napi_create_threadsafe_function(env, argv[1], NULL, name, 0, 1, NULL, NULL,
                                      NULL, pidwatch_call_js, &w->tsfn) != napi_ok) {
    close(pidfd);
    close(wakefd);
    free(w);
    napi_throw_error(env, NULL, "xlock: cannot create a threadsafe function");
    return NULL;
  }
  napi_unref_threadsafe_function(env, w->tsfn); /* a watch keeps nothing alive */
  int rc = start_thread(&w->thread, pidwatch_thread, w);
  if (rc != 0) {
    napi_release_threadsafe_function(w->tsfn, napi_tsfn_abort);
    close(pidfd);
    close(wakefd);
    free(w);
    return make_int(env, -rc);
  }
  napi_add_env_cleanup_hook(env, pidwatch_cleanup_hook, w);
  CHECK(napi_create_external(env, w, pidwatch_finalize, NULL, &handle));
  return handle;
}

/* unwatchPid(handle): stop a watch (its callback then receives -ECANCELED).
 * Idempotent; safe after the watch has reported. */
napi_value js_unwatch_pid(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  void *data = NULL;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || napi_get_value_external(env, argv[0], &data) != napi_ok) {
    napi_throw_type_error(env, NULL, "xlock: expected a watch handle");
    return NULL;
  }
  pidwatch_wake(data);
  return NULL;
}
#else
napi_value js_watch_pid(napi_env env, napi_callback_info info) {
  (void)info;
  return make_int(env, -ENOSYS);
}
napi_value js_unwatch_pid(napi_env env, napi_callback_info info) {
  (void)env;
  (void)info;
  return NULL;
}
#endif
