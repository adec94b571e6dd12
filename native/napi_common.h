/*
 * What both of darefs's addons need around N-API: errors shaped like Node's fs errors, and
 * argument checks. Included by darefs_sys.c and darefs_fuse.c (each defines ADDON_NAME first);
 * everything is static, so each addon gets its own copy and nothing is shared at run time.
 */
#ifndef DAREFS_NAPI_COMMON_H
#define DAREFS_NAPI_COMMON_H

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <node_api.h>

#ifndef ADDON_NAME
#error "define ADDON_NAME before including napi_common.h"
#endif

#define MAX_PATH 4096

/* Node's name for an errno (os.constants.errno); what either addon's calls can answer. */
static const char *errno_code(int e) {
  switch (e) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EINTR: return "EINTR";
    case EIO: return "EIO";
    case ENXIO: return "ENXIO";
    case E2BIG: return "E2BIG";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case ENOTBLK: return "ENOTBLK";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case EXDEV: return "EXDEV";
    case ENODEV: return "ENODEV";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case EINVAL: return "EINVAL";
    case ENFILE: return "ENFILE";
    case EMFILE: return "EMFILE";
    case ETXTBSY: return "ETXTBSY";
    case EFBIG: return "EFBIG";
    case ENOSPC: return "ENOSPC";
    case ESPIPE: return "ESPIPE";
    case EROFS: return "EROFS";
    case EMLINK: return "EMLINK";
    case ERANGE: return "ERANGE";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ENOSYS: return "ENOSYS";
    case ENOTEMPTY: return "ENOTEMPTY";
    case ELOOP: return "ELOOP";
    case ENODATA: return "ENODATA";
    case EOVERFLOW: return "EOVERFLOW";
    case EPROTO: return "EPROTO";
    case ENOTSOCK: return "ENOTSOCK";
    case EMSGSIZE: return "EMSGSIZE";
    /* ENOTSUP and EOPNOTSUPP are one number on Linux: Node names it ENOTSUP. */
    case ENOTSUP: return "ENOTSUP";
    case ENOTCONN: return "ENOTCONN";
    case ECONNRESET: return "ECONNRESET";
    case EDQUOT: return "EDQUOT";
    default: return "EUNKNOWN";
  }
}

/*
 * Throws { message, code, errno (negative, as Node's fs errors), syscall, path }; `path` (and its
 * part of the message) only when there is one. Returns NULL for `return throw_errno(...)`.
 */
static napi_value throw_errno(napi_env env, int e, const char *syscall, const char *path) {
  char msg[MAX_PATH + 128];
  int has_path = path != NULL && *path != '\0';
  if (has_path) snprintf(msg, sizeof msg, "%s: %s, %s '%s'", errno_code(e), strerror(e), syscall, path);
  else snprintf(msg, sizeof msg, "%s: %s, %s", errno_code(e), strerror(e), syscall);
  napi_value message, err, v;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, NULL, message, &err);
  napi_create_string_utf8(env, errno_code(e), NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, err, "code", v);
  napi_create_int32(env, -e, &v);
  napi_set_named_property(env, err, "errno", v);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, err, "syscall", v);
  if (has_path) {
    napi_create_string_utf8(env, path, NAPI_AUTO_LENGTH, &v);
    napi_set_named_property(env, err, "path", v);
  }
  napi_throw(env, err);
  return NULL;
}

static napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, NULL, msg);
  return NULL;
}

static int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < want) {
    throw_type(env, ADDON_NAME ": missing arguments");
    return 0;
  }
  return 1;
}

/*
 * A JS string argument into buf. False, with an error thrown, when it is not a string or holds
 * a NUL (TypeError: C would see a shorter path than JS asked for), or does not fit (too_long:
 * ENAMETOOLONG for a path, ERANGE for an attribute name).
 */
static int get_string(napi_env env, napi_value v, char *buf, size_t cap, const char *what, int too_long) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) {
    throw_type(env, what);
    return 0;
  }
  if (len + 1 > cap) {
    throw_errno(env, too_long, what, "");
    return 0;
  }
  napi_get_value_string_utf8(env, v, buf, cap, &len);
  if (strlen(buf) != len) {
    throw_type(env, what);
    return 0;
  }
  return 1;
}

#endif
