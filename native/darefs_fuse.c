/*
 * darefs_fuse: the part of darefs's own FUSE transport Node.js cannot do by itself: open
 * /dev/fuse, mount(2) / umount2(2), receive the /dev/fuse fd from fusermount3 (SCM_RIGHTS), and
 * a reader thread that blocks on /dev/fuse and hands whole requests to JavaScript in batches.
 * No libfuse. Replies are written from JavaScript (one write per reply), never from here.
 *
 * Errors thrown to JS are shaped like Node's fs errors: { message, code, errno (negative),
 * syscall, path }.
 *
 * The reader (startReader):
 * - One thread per reader, polling the fd and an eventfd. The fd is switched to O_NONBLOCK so that
 *   a request the kernel withdraws between poll() and read() (interrupted before it was read)
 *   cannot leave the thread blocked in read() where stop() could not reach it.
 * - Each read() returns exactly one request, into a buffer of bufferSize bytes (the kernel wants
 *   room for max_write + headers, i.e. ~1 MiB) taken from the reader's pool. A small request is
 *   copied out (only the bytes read, so a 60-byte GETATTR costs 60 bytes, not 1 MiB) and the
 *   buffer is read into again at once; in JS it becomes a V8-owned Buffer (cheaper than an
 *   external buffer and its finalizer). A large one (WRITE data) is handed over in the very buffer
 *   it was read into, as an external Buffer, never copied; its finalizer gives the buffer back to
 *   the pool, so no byte JS can still see is ever read into again. Reusing warm buffers is what
 *   makes 1 MiB writes cheap: a fresh 1 MiB malloc is an mmap, page faults on first touch and an
 *   munmap on free. The pool keeps at most POOL_KEEP idle buffers; at most POOL_LENT may be in
 *   JS's hands at once (beyond that a request is copied into a fresh allocation, as small ones
 *   are), which bounds what the reader holds to (POOL_KEEP + POOL_LENT) * bufferSize.
 * - A lent buffer comes back only after V8 has collected its Buffer, and V8 collects when the
 *   external memory it knows of has grown by ~64 MiB. Reporting each lent buffer once more with
 *   napi_adjust_external_memory (on top of V8's own count of the backing store) halves that to
 *   ~32 buffers; POOL_LENT 24 and POOL_KEEP 2 then keep the null file system under a stream of
 *   1 MiB writes at 88-90 MiB RSS (without the report: 110-120 MiB; 32 lent, 4 idle: 99-105 MiB;
 *   no clear difference in throughput between them on a loaded 2-core machine).
 * - Requests are queued under a mutex and the JS thread is woken with one uv_async_send; libuv
 *   coalesces wake-ups, so JS gets everything queued since its last wake-up as one batch.
 * - JS is called through napi_make_callback, so promises and nextTicks queued by onBatch run when
 *   it returns, as after any other I/O callback.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>
#include <node_api.h>
#include <uv.h>

#define ADDON_NAME "darefs_fuse"
#include "napi_common.h"

/* The kernel truncates mount data beyond a page: refuse longer option strings instead. */
#define MAX_DATA 4096
/* At or below this size a request is copied into a V8 Buffer; above it, handed over as is. */
#define COPY_LIMIT (16 * 1024)
/* The smallest buffer /dev/fuse accepts (FUSE_MIN_READ_BUFFER). */
#define MIN_BUFFER 8192
/* Idle read buffers a reader keeps for reuse. */
#define POOL_KEEP 2
/* Read buffers that may be in JS's hands at once; beyond that, large requests are copied out. */
#define POOL_LENT 24

static int get_int32(napi_env env, napi_value v, int32_t *out, const char *what) {
  if (napi_get_value_int32(env, v, out) != napi_ok) {
    throw_type(env, what);
    return 0;
  }
  return 1;
}

static napi_value make_int(napi_env env, int32_t n) {
  napi_value v;
  napi_create_int32(env, n, &v);
  return v;
}

/* openDevice() -> fd */
static napi_value js_open_device(napi_env env, napi_callback_info info) {
  (void) info;
  int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, errno, "open", "/dev/fuse");
  return make_int(env, fd);
}

/* mount(source, target, fstype, flags, data) -> undefined */
static napi_value js_mount(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  char source[MAX_PATH], target[MAX_PATH], fstype[256], data[MAX_DATA];
  int32_t flags;
  if (!get_args(env, info, 5, argv)) return NULL;
  if (!get_string(env, argv[0], source, sizeof source, "mount: source must be a string without NUL", ENAMETOOLONG)) return NULL;
  if (!get_string(env, argv[1], target, sizeof target, "mount: target must be a string without NUL", ENAMETOOLONG)) return NULL;
  if (!get_string(env, argv[2], fstype, sizeof fstype, "mount: fstype must be a string without NUL", ENAMETOOLONG)) return NULL;
  if (!get_int32(env, argv[3], &flags, "mount: flags must be a number")) return NULL;
  if (!get_string(env, argv[4], data, sizeof data, "mount: data must be a string without NUL", ENAMETOOLONG)) return NULL;
  if (mount(source, target, fstype, (unsigned long) (uint32_t) flags, data) != 0) return throw_errno(env, errno, "mount", target);
  return NULL;
}

/* umount(target, flags) -> undefined (flags: MNT_DETACH = 2 for a lazy unmount) */
static napi_value js_umount(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char target[MAX_PATH];
  int32_t flags;
  if (!get_args(env, info, 2, argv)) return NULL;
  if (!get_string(env, argv[0], target, sizeof target, "umount: target must be a string without NUL", ENAMETOOLONG)) return NULL;
  if (!get_int32(env, argv[1], &flags, "umount: flags must be a number")) return NULL;
  if (umount2(target, flags) != 0) return throw_errno(env, errno, "umount2", target);
  return NULL;
}

/* socketpair() -> [fd, fd]: AF_UNIX stream sockets, both close-on-exec. */
static napi_value js_socketpair(napi_env env, napi_callback_info info) {
  (void) info;
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return throw_errno(env, errno, "socketpair", "");
  napi_value arr;
  napi_create_array_with_length(env, 2, &arr);
  napi_set_element(env, arr, 0, make_int(env, fds[0]));
  napi_set_element(env, arr, 1, make_int(env, fds[1]));
  return arr;
}

/*
 * recvFd(sock) -> fd: one SCM_RIGHTS message, received close-on-exec. Never blocks (the sender,
 * fusermount3, has exited by the time we ask): EAGAIN when nothing was sent, ECONNRESET on EOF,
 * EPROTO when the message carries no descriptor.
 */
static napi_value js_recv_fd(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t sock;
  if (!get_args(env, info, 1, argv)) return NULL;
  if (!get_int32(env, argv[0], &sock, "recvFd: sock must be a number")) return NULL;
  char byte;
  struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * 4)];
  } control;
  memset(&control, 0, sizeof control);
  struct msghdr msg = { 0 };
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof control.buf;
  ssize_t n;
  do n = recvmsg(sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) return throw_errno(env, errno, "recvmsg", "");
  if (n == 0) return throw_errno(env, ECONNRESET, "recvmsg", "");
  int fd = -1;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    int fds[4];
    memcpy(fds, CMSG_DATA(c), count * sizeof(int));
    for (size_t i = 0; i < count; i++) {
      /* one descriptor is expected: close any extra rather than leak it */
      if (fd < 0) fd = fds[i];
      else close(fds[i]);
    }
  }
  if (fd < 0) return throw_errno(env, EPROTO, "recvmsg", "");
  if (msg.msg_flags & MSG_CTRUNC) {
    close(fd);
    return throw_errno(env, EMSGSIZE, "recvmsg", "");
  }
  return make_int(env, fd);
}

/* ------------------------------------------------------------------------------------------ */
/* the reader */

struct pool;

typedef struct request {
  struct request *next;
  size_t len;
  struct pool *pool; /* a read buffer of the pool (bufferSize bytes of data), or NULL: len bytes */
  char data[];
} request;

/*
 * The read buffers of one reader. Shared by the reader thread (takes), the JS thread (finalizers
 * of lent buffers give back) and the reader itself; it lives until the reader is done and the
 * last lent buffer has come back (a Buffer may outlive its reader).
 */
typedef struct pool {
  pthread_mutex_t mu;
  size_t size;   /* data bytes per buffer */
  request *idle; /* at most POOL_KEEP */
  unsigned n_idle;
  unsigned lent;   /* buffers queued for or held by JS */
  int reader_gone; /* the reader has let go: lent buffers are freed when they come back */
} pool;

static pool *pool_new(size_t size) {
  pool *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  pthread_mutex_init(&p->mu, NULL);
  p->size = size;
  return p;
}

/* Frees the pool when nobody holds it; called with p->mu held, returns with it released. */
static void pool_unlock_maybe_free(pool *p) {
  int dead = p->reader_gone && p->lent == 0;
  pthread_mutex_unlock(&p->mu);
  if (dead) {
    pthread_mutex_destroy(&p->mu);
    free(p);
  }
}

/* An idle buffer, or a new one (NULL when out of memory). */
static request *pool_take(pool *p) {
  pthread_mutex_lock(&p->mu);
  request *q = p->idle;
  if (q) {
    p->idle = q->next;
    p->n_idle--;
  }
  pthread_mutex_unlock(&p->mu);
  if (!q) {
    q = malloc(sizeof(request) + p->size);
    if (!q) return NULL;
    q->pool = p;
  }
  q->next = NULL;
  q->len = 0;
  return q;
}

/* Whether one more buffer may be lent to JS; if so it counts as lent from now on. */
static int pool_lend(pool *p) {
  pthread_mutex_lock(&p->mu);
  int ok = p->lent < POOL_LENT;
  if (ok) p->lent++;
  pthread_mutex_unlock(&p->mu);
  return ok;
}

/* A buffer back from JS (or never handed out after all); lent: it was counted by pool_lend. */
static void pool_give_back(pool *p, request *q, int lent) {
  pthread_mutex_lock(&p->mu);
  if (lent) p->lent--;
  if (!p->reader_gone && p->n_idle < POOL_KEEP) {
    q->next = p->idle;
    p->idle = q;
    p->n_idle++;
    q = NULL;
  }
  pool_unlock_maybe_free(p);
  free(q);
}

/* The reader lets go: idle buffers are freed now, lent ones when they come back. */
static void pool_release(pool *p) {
  pthread_mutex_lock(&p->mu);
  p->reader_gone = 1;
  request *q = p->idle;
  p->idle = NULL;
  p->n_idle = 0;
  pool_unlock_maybe_free(p);
  while (q) {
    request *next = q->next;
    free(q);
    q = next;
  }
}

typedef enum { RUNNING, ENDING, DONE } reader_state;

typedef struct reader {
  /* set at start, then read-only */
  int fd;
  int wake_fd; /* eventfd: stop() writes to it, the thread polls it */
  size_t buffer_size;
  napi_env env;
  pool *pool; /* until the handle is closed */

  /* JS thread only */
  uv_async_t async;
  pthread_t thread;
  int thread_joined;
  reader_state state; /* RUNNING; ENDING: stop()/end seen, handle closing; DONE: handle closed */
  napi_ref on_batch, on_end;
  napi_async_context async_context;
  int wrapper_alive; /* the JS Reader object still exists */
  int hook_added;    /* the env cleanup hook is registered */
  int in_callback;   /* inside on_async: release_js must wait until it returns */

  /* shared with the thread, under mu */
  pthread_mutex_t mu;
  request *head, *tail;
  size_t queued;
  int ended;     /* the thread has exited on its own */
  int end_errno; /* why */
} reader;

/* Queues one request for JS and wakes the JS thread. */
static void enqueue(reader *r, request *q) {
  pthread_mutex_lock(&r->mu);
  if (r->tail) r->tail->next = q;
  else r->head = q;
  r->tail = q;
  r->queued++;
  pthread_mutex_unlock(&r->mu);
  uv_async_send(&r->async);
}

static void *reader_thread(void *arg) {
  reader *r = arg;
  int err = 0;
  request *buf = NULL; /* the pool buffer read into next */
  struct pollfd pfd[2] = { { .fd = r->fd, .events = POLLIN }, { .fd = r->wake_fd, .events = POLLIN } };
  while (!err) {
    int p = poll(pfd, 2, -1);
    if (p < 0) {
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    if (pfd[1].revents) break; /* stop() */
    if (!pfd[0].revents) continue;
    /* POLLERR on an unmounted connection: read() says which error (ENODEV) */
    for (;;) {
      if (!buf && !(buf = pool_take(r->pool))) {
        err = ENOMEM;
        break;
      }
      ssize_t n = read(r->fd, buf->data, r->buffer_size);
      if (n < 0) {
        if (errno == EAGAIN) break;
        /* EINTR: a signal; ENOENT: the request was interrupted and withdrawn while we read it */
        if (errno == EINTR || errno == ENOENT) continue;
        err = errno;
        break;
      }
      if (n == 0) {
        /* not something /dev/fuse does; treat it as the end of the connection */
        err = ENODEV;
        break;
      }
      if ((size_t) n > COPY_LIMIT && pool_lend(r->pool)) {
        /* handed over as is; the next read takes another buffer */
        buf->len = (size_t) n;
        enqueue(r, buf);
        buf = NULL;
        continue;
      }
      request *q = malloc(sizeof(request) + (size_t) n);
      if (!q) {
        err = ENOMEM;
        break;
      }
      q->next = NULL;
      q->len = (size_t) n;
      q->pool = NULL;
      memcpy(q->data, buf->data, (size_t) n);
      enqueue(r, q);
    }
  }
  if (buf) pool_give_back(r->pool, buf, 0);
  if (err) {
    pthread_mutex_lock(&r->mu);
    r->ended = 1;
    r->end_errno = err;
    pthread_mutex_unlock(&r->mu);
    uv_async_send(&r->async);
  }
  return NULL;
}

/* Frees a request that JS never saw. */
static void drop_request(request *q) {
  if (q->pool) pool_give_back(q->pool, q, 1);
  else free(q);
}

static void free_queue(request *q) {
  while (q) {
    request *next = q->next;
    drop_request(q);
    q = next;
  }
}

static void reader_free_if_unused(reader *r) {
  if (r->state != DONE || r->wrapper_alive) return;
  pthread_mutex_destroy(&r->mu);
  free(r);
}

/*
 * Runs on the loop after uv_close. No N-API here: at environment teardown this runs after the
 * napi_env is gone.
 */
static void on_async_closed(uv_handle_t *h) {
  reader *r = h->data;
  /* anything the thread queued after the last batch was never handed out */
  free_queue(r->head);
  r->head = r->tail = NULL;
  if (r->pool) pool_release(r->pool);
  r->pool = NULL;
  r->state = DONE;
  reader_free_if_unused(r);
}

/*
 * Drops the callbacks and the async context. Never from inside one of our own callbacks
 * (napi_make_callback is still using the context then): on_async calls it when the callback
 * has returned.
 */
static void release_js(reader *r) {
  if (r->on_batch) napi_delete_reference(r->env, r->on_batch);
  if (r->on_end) napi_delete_reference(r->env, r->on_end);
  r->on_batch = r->on_end = NULL;
  if (r->async_context) napi_async_destroy(r->env, r->async_context);
  r->async_context = NULL;
}

static void reader_cleanup_hook(void *arg);

/*
 * Tells the thread to stop (unless it has ended on its own), joins it and closes the handle: no
 * callback runs after this returns. release: drop the JS references now (unless inside a
 * callback); false at environment teardown, where N-API is going away with them.
 */
static void reader_shutdown(reader *r, int tell_thread, int release) {
  if (r->state != RUNNING) return;
  r->state = ENDING;
  if (tell_thread) {
    uint64_t one = 1;
    ssize_t w;
    do w = write(r->wake_fd, &one, sizeof one);
    while (w < 0 && errno == EINTR);
  }
  if (!r->thread_joined) {
    pthread_join(r->thread, NULL);
    r->thread_joined = 1;
  }
  close(r->wake_fd);
  r->wake_fd = -1;
  if (r->hook_added) napi_remove_env_cleanup_hook(r->env, reader_cleanup_hook, r);
  r->hook_added = 0;
  uv_close((uv_handle_t *) &r->async, on_async_closed);
  if (release && !r->in_callback) release_js(r);
}

static void external_finalize(napi_env env, void *data, void *hint) {
  (void) data;
  request *q = hint;
  int64_t ignored;
  napi_adjust_external_memory(env, -(int64_t) q->len, &ignored);
  /* only pool buffers are lent */
  pool_give_back(q->pool, q, 1);
}

/* Calls fn(args) as an I/O callback would be called; an exception goes to 'uncaughtException'. */
static void call_js(reader *r, napi_ref fn_ref, size_t argc, napi_value *argv) {
  napi_env env = r->env;
  napi_value fn, recv, result;
  if (!fn_ref || napi_get_reference_value(env, fn_ref, &fn) != napi_ok || !fn) return;
  /* MakeCallback wants an object as `this` */
  napi_get_global(env, &recv);
  napi_status s = napi_make_callback(env, r->async_context, recv, fn, argc, argv, &result);
  if (s == napi_pending_exception) {
    napi_value exc;
    napi_get_and_clear_last_exception(env, &exc);
    napi_fatal_exception(env, exc);
  }
}

static void on_async(uv_async_t *h) {
  reader *r = h->data;
  if (r->state != RUNNING) return;
  pthread_mutex_lock(&r->mu);
  request *q = r->head;
  size_t count = r->queued;
  int ended = r->ended, end_errno = r->end_errno;
  r->head = r->tail = NULL;
  r->queued = 0;
  pthread_mutex_unlock(&r->mu);

  napi_env env = r->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  r->in_callback = 1;
  if (count) {
    napi_value batch;
    napi_create_array_with_length(env, count, &batch);
    uint32_t i = 0;
    while (q) {
      request *next = q->next;
      napi_value buf;
      void *ignored;
      if (!q->pool) {
        /* small, or more lent than POOL_LENT: V8 gets its own copy */
        napi_create_buffer_copy(env, q->len, q->data, &ignored, &buf);
        free(q);
      } else {
        int64_t total;
        napi_adjust_external_memory(env, (int64_t) q->len, &total);
        if (napi_create_external_buffer(env, q->len, q->data, external_finalize, q, &buf) != napi_ok) {
          /* external buffers refused (never on Node itself): copy instead */
          napi_adjust_external_memory(env, -(int64_t) q->len, &total);
          napi_create_buffer_copy(env, q->len, q->data, &ignored, &buf);
          drop_request(q);
        }
      }
      napi_set_element(env, batch, i++, buf);
      q = next;
    }
    call_js(r, r->on_batch, 1, &batch);
  }
  if (ended && r->state == RUNNING) {
    /* the thread has returned (or is returning) on its own: joining does not wait */
    pthread_join(r->thread, NULL);
    r->thread_joined = 1;
    napi_value arg = make_int(env, end_errno);
    /* closed first, so that a stop() from inside onEnd finds nothing left to do */
    reader_shutdown(r, 0, 1);
    call_js(r, r->on_end, 1, &arg);
  }
  r->in_callback = 0;
  /* stopped or ended during this call: the callbacks may go now */
  if (r->state != RUNNING) release_js(r);
  napi_close_handle_scope(env, scope);
}

static reader *unwrap_reader(napi_env env, napi_callback_info info) {
  napi_value self;
  size_t argc = 0;
  void *p = NULL;
  napi_get_cb_info(env, info, &argc, NULL, &self, NULL);
  if (napi_unwrap(env, self, &p) != napi_ok || !p) {
    throw_type(env, "not a darefs_fuse Reader");
    return NULL;
  }
  return p;
}

static napi_value js_reader_stop(napi_env env, napi_callback_info info) {
  reader *r = unwrap_reader(env, info);
  if (r) reader_shutdown(r, 1, 1);
  return NULL;
}

static napi_value js_reader_ref(napi_env env, napi_callback_info info) {
  reader *r = unwrap_reader(env, info);
  if (r && r->state == RUNNING) uv_ref((uv_handle_t *) &r->async);
  return NULL;
}

static napi_value js_reader_unref(napi_env env, napi_callback_info info) {
  reader *r = unwrap_reader(env, info);
  if (r && r->state == RUNNING) uv_unref((uv_handle_t *) &r->async);
  return NULL;
}

static void reader_finalize(napi_env env, void *data, void *hint) {
  (void) env;
  (void) hint;
  reader *r = data;
  /* The Reader object is gone, but a running reader still owns its callbacks: it keeps going
   * (and keeps the loop alive if ref'd) until the connection ends. */
  r->wrapper_alive = 0;
  reader_free_if_unused(r);
}

/* At environment teardown (process or worker exit) the thread must not outlive the loop. */
static void reader_cleanup_hook(void *arg) {
  reader *r = arg;
  if (r->state == RUNNING) reader_shutdown(r, 1, 0);
}

/*
 * startReader(fd, bufferSize, onBatch(requests: Buffer[]), onEnd(errno)) -> Reader { stop(), ref(), unref() }
 * Sets O_NONBLOCK on fd.
 */
static napi_value js_start_reader(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int32_t fd, size;
  if (!get_args(env, info, 4, argv)) return NULL;
  if (!get_int32(env, argv[0], &fd, "startReader: fd must be a number")) return NULL;
  if (!get_int32(env, argv[1], &size, "startReader: bufferSize must be a number")) return NULL;
  if (size < MIN_BUFFER) return throw_type(env, "startReader: bufferSize must be at least 8192");
  napi_valuetype t1, t2;
  napi_typeof(env, argv[2], &t1);
  napi_typeof(env, argv[3], &t2);
  if (t1 != napi_function || t2 != napi_function) return throw_type(env, "startReader: onBatch and onEnd must be functions");

  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) return throw_errno(env, errno, "fcntl", "");

  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return throw_type(env, "startReader: no event loop");
  reader *r = calloc(1, sizeof *r);
  if (!r) return throw_errno(env, ENOMEM, "startReader", "");
  r->fd = fd;
  r->buffer_size = (size_t) size;
  r->env = env;
  r->state = RUNNING;
  r->pool = pool_new(r->buffer_size);
  if (!r->pool) {
    free(r);
    return throw_errno(env, ENOMEM, "startReader", "");
  }
  r->wake_fd = eventfd(0, EFD_CLOEXEC);
  if (r->wake_fd < 0) {
    int e = errno;
    pool_release(r->pool);
    free(r);
    return throw_errno(env, e, "eventfd", "");
  }
  pthread_mutex_init(&r->mu, NULL);
  napi_value resource_name;
  napi_create_string_utf8(env, "darefs_fuse.Reader", NAPI_AUTO_LENGTH, &resource_name);
  napi_async_init(env, NULL, resource_name, &r->async_context);
  napi_create_reference(env, argv[2], 1, &r->on_batch);
  napi_create_reference(env, argv[3], 1, &r->on_end);

  uv_async_init(loop, &r->async, on_async);
  r->async.data = r;

  napi_value obj, fn;
  napi_create_object(env, &obj);
  napi_create_function(env, "stop", NAPI_AUTO_LENGTH, js_reader_stop, NULL, &fn);
  napi_set_named_property(env, obj, "stop", fn);
  napi_create_function(env, "ref", NAPI_AUTO_LENGTH, js_reader_ref, NULL, &fn);
  napi_set_named_property(env, obj, "ref", fn);
  napi_create_function(env, "unref", NAPI_AUTO_LENGTH, js_reader_unref, NULL, &fn);
  napi_set_named_property(env, obj, "unref", fn);
  napi_wrap(env, obj, r, reader_finalize, NULL, NULL);
  r->wrapper_alive = 1;

  sigset_t all, old;
  sigfillset(&all);
  /* signals stay with Node's threads (the thread inherits this mask): nothing here handles them */
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int e = pthread_create(&r->thread, NULL, reader_thread, r);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (e != 0) {
    r->thread_joined = 1;
    reader_shutdown(r, 0, 1);
    return throw_errno(env, e, "pthread_create", "");
  }
  /* named so that tests (and ps -L) can see it come and go */
  pthread_setname_np(r->thread, "darefs-fuse");
  napi_add_env_cleanup_hook(env, reader_cleanup_hook, r);
  r->hook_added = 1;
  return obj;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "openDevice", NULL, js_open_device, NULL, NULL, NULL, napi_default, NULL },
    { "mount", NULL, js_mount, NULL, NULL, NULL, napi_default, NULL },
    { "umount", NULL, js_umount, NULL, NULL, NULL, napi_default, NULL },
    { "socketpair", NULL, js_socketpair, NULL, NULL, NULL, napi_default, NULL },
    { "recvFd", NULL, js_recv_fd, NULL, NULL, NULL, napi_default, NULL },
    { "startReader", NULL, js_start_reader, NULL, NULL, NULL, napi_default, NULL },
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
