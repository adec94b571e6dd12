/*
 * darefs_sys: the few Linux calls Node.js does not offer and darefs needs on the cipher
 * directory: extended attributes (l*xattr: never follow a symlink, as FUSE hands us the link
 * itself), mknod (sockets and device nodes; Node can only make FIFOs through a child), and
 * utimensat to the nanosecond.
 *
 * Every function is synchronous, like the fs calls the FUSE operations already use on the local
 * cipher directory, and throws an Error shaped like Node's fs errors ({ code, errno, syscall,
 * path }) so that darefs's single errno mapping handles it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <linux/openat2.h>
#include <node_api.h>

#define ADDON_NAME "darefs_sys"
#include "napi_common.h"

#ifndef SYS_openat2
#define SYS_openat2 437
#endif

#define MAX_NAME 256
#define MAX_VALUE 65536
#define MAX_LIST 65536

/* The first n bytes of buf as a new Buffer, or the call's errno thrown (n < 0); frees buf. */
static napi_value buffer_result(napi_env env, char *buf, ssize_t n, const char *syscall, const char *path) {
  if (n < 0) {
    int e = errno;
    free(buf);
    return throw_errno(env, e, syscall, path);
  }
  napi_value out;
  void *data;
  napi_create_buffer_copy(env, (size_t) n, buf, &data, &out);
  free(buf);
  return out;
}

/* lgetxattr(path, name) -> Buffer; throws ENODATA when the attribute does not exist. */
static napi_value js_lgetxattr(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char path[MAX_PATH], name[MAX_NAME];
  if (!get_args(env, info, 2, argv)) return NULL;
  if (!get_string(env, argv[0], path, sizeof path, "lgetxattr: path must be a string", ENAMETOOLONG)) return NULL;
  if (!get_string(env, argv[1], name, sizeof name, "lgetxattr: bad attribute name", ERANGE)) return NULL;
  /* Values are at most 64 KiB on Linux (XATTR_SIZE_MAX): one call with a full buffer, no size race. */
  char *buf = malloc(MAX_VALUE);
  if (!buf) return throw_errno(env, ENOMEM, "lgetxattr", path);
  return buffer_result(env, buf, lgetxattr(path, name, buf, MAX_VALUE), "lgetxattr", path);
}

/* lsetxattr(path, name, value: Buffer, flags) -> undefined */
static napi_value js_lsetxattr(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  char path[MAX_PATH], name[MAX_NAME];
  if (!get_args(env, info, 4, argv)) return NULL;
  if (!get_string(env, argv[0], path, sizeof path, "lsetxattr: path must be a string", ENAMETOOLONG)) return NULL;
  if (!get_string(env, argv[1], name, sizeof name, "lsetxattr: bad attribute name", ERANGE)) return NULL;
  void *value = NULL;
  size_t size = 0;
  bool is_buffer = false;
  napi_is_buffer(env, argv[2], &is_buffer);
  if (!is_buffer) return throw_type(env, "lsetxattr: value must be a Buffer");
  napi_get_buffer_info(env, argv[2], &value, &size);
  int32_t flags = 0;
  if (napi_get_value_int32(env, argv[3], &flags) != napi_ok) return throw_type(env, "lsetxattr: flags must be a number");
  if (lsetxattr(path, name, size ? value : "", size, flags) != 0) return throw_errno(env, errno, "lsetxattr", path);
  return NULL;
}

/* llistxattr(path) -> Buffer of NUL-terminated names */
static napi_value js_llistxattr(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  char path[MAX_PATH];
  if (!get_args(env, info, 1, argv)) return NULL;
  if (!get_string(env, argv[0], path, sizeof path, "llistxattr: path must be a string", ENAMETOOLONG)) return NULL;
  char *buf = malloc(MAX_LIST);
  if (!buf) return throw_errno(env, ENOMEM, "llistxattr", path);
  return buffer_result(env, buf, llistxattr(path, buf, MAX_LIST), "llistxattr", path);
}

/* lremovexattr(path, name) -> undefined */
static napi_value js_lremovexattr(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char path[MAX_PATH], name[MAX_NAME];
  if (!get_args(env, info, 2, argv)) return NULL;
  if (!get_string(env, argv[0], path, sizeof path, "lremovexattr: path must be a string", ENAMETOOLONG)) return NULL;
  if (!get_string(env, argv[1], name, sizeof name, "lremovexattr: bad attribute name", ERANGE)) return NULL;
  if (lremovexattr(path, name) != 0) return throw_errno(env, errno, "lremovexattr", path);
  return NULL;
}

/* mknod(path, mode, major, minor) -> undefined */
static napi_value js_mknod(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  char path[MAX_PATH];
  if (!get_args(env, info, 4, argv)) return NULL;
  if (!get_string(env, argv[0], path, sizeof path, "mknod: path must be a string", ENAMETOOLONG)) return NULL;
  uint32_t mode = 0, major_ = 0, minor_ = 0;
  if (napi_get_value_uint32(env, argv[1], &mode) != napi_ok ||
      napi_get_value_uint32(env, argv[2], &major_) != napi_ok ||
      napi_get_value_uint32(env, argv[3], &minor_) != napi_ok) {
    return throw_type(env, "mknod: mode, major and minor must be numbers");
  }
  if (mknod(path, (mode_t) mode, makedev(major_, minor_)) != 0) return throw_errno(env, errno, "mknod", path);
  return NULL;
}

/*
 * lutimens(path, atimeSec, atimeNsec, mtimeSec, mtimeNsec) -> undefined. utimensat without
 * following a symlink, to the nanosecond (Node's lutimes stops at microseconds); a tv_nsec of
 * UTIME_NOW or UTIME_OMIT passes through to the kernel as such.
 */
static napi_value js_lutimens(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  char path[MAX_PATH];
  if (!get_args(env, info, 5, argv)) return NULL;
  if (!get_string(env, argv[0], path, sizeof path, "lutimens: path must be a string", ENAMETOOLONG)) return NULL;
  int64_t asec = 0, msec = 0;
  uint32_t ansec = 0, mnsec = 0;
  if (napi_get_value_int64(env, argv[1], &asec) != napi_ok || napi_get_value_uint32(env, argv[2], &ansec) != napi_ok ||
      napi_get_value_int64(env, argv[3], &msec) != napi_ok || napi_get_value_uint32(env, argv[4], &mnsec) != napi_ok) {
    return throw_type(env, "lutimens: times must be numbers");
  }
  struct timespec ts[2] = { { .tv_sec = (time_t) asec, .tv_nsec = ansec }, { .tv_sec = (time_t) msec, .tv_nsec = mnsec } };
  if (utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) != 0) return throw_errno(env, errno, "utimensat", path);
  return NULL;
}

/*
 * futimens(fd, atimeSec, atimeNsec, mtimeSec, mtimeNsec) -> undefined: utimensat on an open file,
 * to the nanosecond; UTIME_NOW / UTIME_OMIT pass through. A checkpoint writes a file in place
 * long after its writes were accepted: this puts back the mtime they (or a utimens) gave it.
 */
static napi_value js_futimens(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  if (!get_args(env, info, 5, argv)) return NULL;
  int32_t fd = -1;
  int64_t asec = 0, msec = 0;
  uint32_t ansec = 0, mnsec = 0;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int64(env, argv[1], &asec) != napi_ok ||
      napi_get_value_uint32(env, argv[2], &ansec) != napi_ok || napi_get_value_int64(env, argv[3], &msec) != napi_ok ||
      napi_get_value_uint32(env, argv[4], &mnsec) != napi_ok) {
    return throw_type(env, "futimens: fd and times must be numbers");
  }
  struct timespec ts[2] = { { .tv_sec = (time_t) asec, .tv_nsec = ansec }, { .tv_sec = (time_t) msec, .tv_nsec = mnsec } };
  if (futimens(fd, ts) != 0) return throw_errno(env, errno, "futimens", "");
  return NULL;
}

/*
 * fcopyxattrs(fromFd, toFd) -> number copied. For a file rewritten into a new inode (temporary
 * file renamed over the old one): every attribute goes along, but security.ima/evm (they describe
 * the old content). Names outside user.* that this
 * process may not set (security.*, trusted.* without privilege) are skipped; anything else that
 * fails throws, so a rewrite never silently drops a user's attribute.
 */
static napi_value js_fcopyxattrs(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  int32_t from = -1, to = -1;
  if (napi_get_value_int32(env, argv[0], &from) != napi_ok || napi_get_value_int32(env, argv[1], &to) != napi_ok) {
    return throw_type(env, "fcopyxattrs: file descriptors must be numbers");
  }
  char *list = malloc(MAX_LIST);
  char *value = malloc(MAX_VALUE);
  if (!list || !value) {
    free(list);
    free(value);
    return throw_errno(env, ENOMEM, "fcopyxattrs", "");
  }
  int copied = 0;
  ssize_t n = flistxattr(from, list, MAX_LIST);
  if (n < 0) {
    int e = errno;
    free(list);
    free(value);
    if (e == ENOTSUP) return NULL;
    return throw_errno(env, e, "flistxattr", "");
  }
  for (char *name = list; name < list + n; name += strlen(name) + 1) {
    /* Measurements and signatures of the old content would be wrong for the new content. */
    if (strcmp(name, "security.ima") == 0 || strcmp(name, "security.evm") == 0) continue;
    int user = strncmp(name, "user.", 5) == 0;
    ssize_t len = fgetxattr(from, name, value, MAX_VALUE);
    if (len < 0 || fsetxattr(to, name, value, (size_t) len, 0) != 0) {
      int e = errno;
      if (!user && (e == EPERM || e == EACCES || e == ENOTSUP || e == ENODATA)) continue;
      free(list);
      free(value);
      return throw_errno(env, e, len < 0 ? "fgetxattr" : "fsetxattr", name);
    }
    copied++;
  }
  free(list);
  free(value);
  napi_value out;
  napi_create_int32(env, copied, &out);
  return out;
}

/*
 * openat2(dirfd, path, flags, mode, resolve) -> fd. The cipher directory is hostile (FORMAT.md
 * §6): darefs resolves every path beneath the directory's fd with RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS, so no planted symlink or ".." can lead a write
 * outside. glibc 2.36 has no wrapper: the raw system call. ENOSYS on kernels before 5.6 (the
 * caller then walks component by component).
 */
static napi_value js_openat2(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  char path[MAX_PATH];
  if (!get_args(env, info, 5, argv)) return NULL;
  int32_t dirfd = -1;
  uint32_t flags = 0, mode = 0;
  int64_t resolve = 0;
  if (napi_get_value_int32(env, argv[0], &dirfd) != napi_ok) return throw_type(env, "openat2: dirfd must be a number");
  if (!get_string(env, argv[1], path, sizeof path, "openat2: path must be a string", ENAMETOOLONG)) return NULL;
  if (napi_get_value_uint32(env, argv[2], &flags) != napi_ok || napi_get_value_uint32(env, argv[3], &mode) != napi_ok ||
      napi_get_value_int64(env, argv[4], &resolve) != napi_ok) {
    return throw_type(env, "openat2: flags, mode and resolve must be numbers");
  }
  struct open_how how;
  memset(&how, 0, sizeof how);
  how.flags = (uint64_t) flags;
  /* The kernel refuses a mode without O_CREAT or O_TMPFILE (glibc's O_TMPFILE includes O_DIRECTORY). */
  how.mode = ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) ? (uint64_t) mode : 0;
  how.resolve = (uint64_t) resolve;
  long fd;
  do {
    fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return throw_errno(env, errno, "openat2", path);
  napi_value out;
  napi_create_int32(env, (int32_t) fd, &out);
  return out;
}

/*
 * harden() -> undefined. The daemon holds keys and plaintext: no core dumps (RLIMIT_CORE 0) and
 * not dumpable, so other processes of the same user cannot ptrace it or read /proc/PID/mem.
 */
static napi_value js_harden(napi_env env, napi_callback_info info) {
  (void) info;
  struct rlimit none = { 0, 0 };
  if (setrlimit(RLIMIT_CORE, &none) != 0) return throw_errno(env, errno, "setrlimit", "RLIMIT_CORE");
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return throw_errno(env, errno, "prctl", "PR_SET_DUMPABLE");
  return NULL;
}

/*
 * scrubenv(name) -> number of values overwritten. Unsetting a variable only drops the pointer to
 * it; the text stays in the environment block the kernel laid out at exec, which
 * /proc/PID/environ shows. This overwrites the value of every "name=" in that block (its bounds:
 * fields 50 and 51 of /proc/self/stat) with zero bytes. Call it after the variable was unset, so
 * nothing still points at the text.
 */
static napi_value js_scrubenv(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  char name[MAX_NAME];
  if (!get_args(env, info, 1, argv)) return NULL;
  if (!get_string(env, argv[0], name, sizeof name, "scrubenv: name must be a string", ENAMETOOLONG)) return NULL;
  FILE *f = fopen("/proc/self/stat", "r");
  if (!f) return throw_errno(env, errno, "open", "/proc/self/stat");
  char stat[4096];
  size_t n = fread(stat, 1, sizeof stat - 1, f);
  fclose(f);
  stat[n] = 0;
  /* Fields after the command name, which is in parentheses and may hold spaces. */
  char *p = strrchr(stat, ')');
  if (!p) return throw_errno(env, EIO, "parse", "/proc/self/stat");
  unsigned long long start = 0, end = 0;
  int field = 2;
  for (char *tok = strtok(p + 1, " "); tok; tok = strtok(NULL, " ")) {
    field++;
    if (field == 50) start = strtoull(tok, NULL, 10);
    if (field == 51) end = strtoull(tok, NULL, 10);
  }
  if (start == 0 || end <= start) return throw_errno(env, EIO, "parse", "/proc/self/stat");
  size_t len = strlen(name);
  int scrubbed = 0;
  char *block = (char *) (uintptr_t) start;
  char *limit = (char *) (uintptr_t) end;
  for (char *entry = block; entry < limit; entry += strnlen(entry, (size_t) (limit - entry)) + 1) {
    if ((size_t) (limit - entry) > len && strncmp(entry, name, len) == 0 && entry[len] == '=') {
      char *value = entry + len + 1;
      memset(value, 0, strnlen(value, (size_t) (limit - value)));
      scrubbed++;
    }
  }
  napi_value out;
  napi_create_int32(env, scrubbed, &out);
  return out;
}
/* ---- fallocate (issue 10, item 5: reserve a file's growth before writing it) ---- */

/*
 * fallocate(fd, mode, offset, length) -> undefined. Throws { code, errno, syscall } (no path: the caller names the file);
 * EOPNOTSUPP shows as "ENOTSUP" (the same number on Linux). Offsets are JS numbers (exact below
 * 2^53).
 */
static napi_value js_fallocate(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv)) return NULL;
  int32_t fd = -1, mode = 0;
  int64_t offset = 0, length = 0;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int32(env, argv[1], &mode) != napi_ok ||
      napi_get_value_int64(env, argv[2], &offset) != napi_ok || napi_get_value_int64(env, argv[3], &length) != napi_ok) {
    return throw_type(env, "fallocate: fd, mode, offset and length must be numbers");
  }
  int r;
  do {
    r = fallocate(fd, mode, (off_t) offset, (off_t) length);
  } while (r != 0 && errno == EINTR);
  if (r == 0) return NULL;
  return throw_errno(env, errno, "fallocate", "");
}

/* ---- end fallocate ---- */

/*
 * renameat2(from, to, flags) -> undefined. rename(2) with RENAME_NOREPLACE / RENAME_EXCHANGE,
 * which Node's fs lacks; the paths are the confined /proc/self/fd/N/name forms CipherDir gives.
 */
static napi_value js_renameat2(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  char from[MAX_PATH], to[MAX_PATH];
  if (!get_args(env, info, 3, argv)) return NULL;
  if (!get_string(env, argv[0], from, sizeof from, "renameat2: from must be a string", ENAMETOOLONG)) return NULL;
  if (!get_string(env, argv[1], to, sizeof to, "renameat2: to must be a string", ENAMETOOLONG)) return NULL;
  uint32_t flags = 0;
  if (napi_get_value_uint32(env, argv[2], &flags) != napi_ok) return throw_type(env, "renameat2: flags must be a number");
  if (syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, (unsigned int) flags) != 0) return throw_errno(env, errno, "renameat2", from);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "lgetxattr", NULL, js_lgetxattr, NULL, NULL, NULL, napi_enumerable, NULL },
    { "lsetxattr", NULL, js_lsetxattr, NULL, NULL, NULL, napi_enumerable, NULL },
    { "llistxattr", NULL, js_llistxattr, NULL, NULL, NULL, napi_enumerable, NULL },
    { "lremovexattr", NULL, js_lremovexattr, NULL, NULL, NULL, napi_enumerable, NULL },
    { "mknod", NULL, js_mknod, NULL, NULL, NULL, napi_enumerable, NULL },
    { "fcopyxattrs", NULL, js_fcopyxattrs, NULL, NULL, NULL, napi_enumerable, NULL },
    { "lutimens", NULL, js_lutimens, NULL, NULL, NULL, napi_enumerable, NULL },
    { "openat2", NULL, js_openat2, NULL, NULL, NULL, napi_enumerable, NULL },
    { "harden", NULL, js_harden, NULL, NULL, NULL, napi_enumerable, NULL },
    { "scrubenv", NULL, js_scrubenv, NULL, NULL, NULL, napi_enumerable, NULL },
    { "fallocate", NULL, js_fallocate, NULL, NULL, NULL, napi_enumerable, NULL },
    { "renameat2", NULL, js_renameat2, NULL, NULL, NULL, napi_enumerable, NULL },
    { "futimens", NULL, js_futimens, NULL, NULL, NULL, napi_enumerable, NULL },
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
