#!/usr/bin/env node
/*
 * postinstall: patch fuse-native@2.2.6's C code so times pass exactly both ways (utimens, stat),
 * getxattr has a fast path and new files know their caller, and rebuild the addon.
 *
 * Stock 2.2.6 converts both times to milliseconds and then passes the ATIME twice, so a handler
 * never sees the mtime and loses nanoseconds; and it does not set libfuse 2.9's
 * flag_utime_omit_ok, so libfuse calls utimens only when both times change and silently drops
 * `touch -m` / `touch -a` (with the flag it passes UTIME_OMIT / UTIME_NOW as tv_nsec values).
 * Patched (flag set), the JS handler gets, for atime
 * then mtime: seconds low 32 bits (uint32), seconds high 32 bits (int32, so negative times work),
 * tv_nsec (uint32: 0..999999999, or UTIME_NOW = 2^30-1 / UTIME_OMIT = 2^30-2); and the addon
 * exports `darefs_utimens_ns = 1` so darefs can tell the patched binary from the stock one
 * (src/fuse/native.ts).
 *
 * Stat times go from JS to C as 64-bit seconds plus nanoseconds (stock: unsigned milliseconds),
 * and the addon exports `darefs_stat_ns = 2` (1 was an earlier signed-nanoseconds layout).
 *
 * Also: getxattr answers ENODATA for any name outside user.* in C, without the hop into
 * JavaScript (darefs keeps only user.* attributes; the kernel asks for security.capability before
 * every write).
 *
 * And create, mkdir, mknod and symlink pass the caller's uid and gid (fuse_get_context()) after
 * their stock arguments, so darefs can give a user what the user creates; the addon exports
 * `darefs_caller_ids = 1`.
 *
 * Never breaks the install: on an unexpected version or source text, or when the rebuild fails,
 * it prints a warning, leaves (or puts back) the original source and the previous binary, and
 * exits 0; darefs then falls back to the stock behaviour with a warning. Idempotent: a marker
 * file (.darefs-patched, holding the hash of the patch) plus a check of the source and binary
 * make a rerun a no-op.
 *
 * Plain Node.js, no dependencies. Environment: DAREFS_SKIP_FUSE_PATCH=1 skips it.
 */
'use strict';

const childProcess = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { findNodeGyp, rebuild } = require('./node-gyp-runner');

const EXPECTED_VERSION = '2.2.6';
const SOURCE = 'fuse-native.c';
const MARKER = '.darefs-patched';
const EXPORT_NAME = 'darefs_utimens_ns';
const PREV_BUILD = 'build.darefs-prev';
/** The stock source, kept at the first patching so a later version of this patch can start over. */
const PRISTINE = 'fuse-native.c.darefs-orig';

/**
 * create, mkdir, mknod and symlink also hand JavaScript the caller's uid and gid (from
 * fuse_get_context(), which is only valid on libfuse's thread): two more arguments after the
 * stock ones, so darefs can give what a user creates to that user, as a local file system does.
 * Stock fuse-native's own handlers ignore extra arguments.
 */
function callerHunks() {
  const methods = [
    { name: 'create', args: 2, signal: 1, sig: '(const char *path, mode_t mode, struct fuse_file_info *info)', first: '  l->path = path;\n  l->mode = mode;\n  l->info = info;\n', last: '  napi_create_uint32(env, l->mode, &(argv[3]));\n' },
    { name: 'mknod', args: 3, signal: 0, sig: '(const char *path, mode_t mode, dev_t dev)', first: '  l->path = path;\n  l->mode = mode;\n  l->dev = dev;\n', last: '  napi_create_uint32(env, l->mode, &(argv[3]));\n  napi_create_uint32(env, l->dev, &(argv[4]));\n' },
    { name: 'symlink', args: 2, signal: 0, sig: '(const char *path, const char *dest)', first: '  l->path = path;\n  l->dest = dest;\n', last: '  napi_create_string_utf8(env, l->dest, NAPI_AUTO_LENGTH, &(argv[3]));\n' },
    { name: 'mkdir', args: 2, signal: 0, sig: '(const char *path, mode_t mode)', first: '  l->path = path;\n  l->mode = mode;\n', last: '  napi_create_uint32(env, l->mode, &(argv[3]));\n' },
  ];
  return methods.map((m) => {
    const macro = m.name === 'create' ? 'FUSE_METHOD' : 'FUSE_METHOD_VOID';
    const head = (n) => `${macro}(${m.name}, ${n}, ${m.signal}, ${m.sig}, {\n`;
    const at = 2 + m.args;
    const helperC =
      m.name === 'create'
        ? '/* darefs patch: who is asking (valid on libfuse\'s thread only). */\n' +
          'static const uint32_t darefs_caller_ids = 1;\n' +
          'static void darefs_caller (fuse_thread_locals_t *l) {\n' +
          '  struct fuse_context *c = fuse_get_context();\n' +
          '  l->caller_uid = c != NULL ? c->uid : 0;\n' +
          '  l->caller_gid = c != NULL ? c->gid : 0;\n' +
          '}\n\n'
        : '';
    return {
      name: `${m.name}: pass the caller's uid and gid`,
      from: head(m.args) + m.first + '}, {\n  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));\n' + m.last,
      to:
        helperC +
        head(m.args + 2) +
        m.first +
        '  darefs_caller(l);\n' +
        '}, {\n  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));\n' +
        m.last +
        `  napi_create_uint32(env, l->caller_uid, &(argv[${at}]));\n` +
        `  napi_create_uint32(env, l->caller_gid, &(argv[${at + 1}]));\n`,
    };
  });
}

/** Exact replacements; each `from` must occur exactly once in the stock source. */
const HUNKS = [
  {
    name: 'thread-local storage for the two timespecs',
    from: '  size_t atime;\n  size_t mtime;\n  int32_t res;\n',
    to:
      '  size_t atime;\n  size_t mtime;\n' +
      '  struct timespec utimens_tv[2]; /* darefs patch: utimens times, exact */\n' +
      '  int32_t res;\n',
  },
  {
    name: 'utimens: pass atime and mtime exactly',
    from:
      'FUSE_METHOD_VOID(utimens, 5, 0, (const char *path, const struct timespec tv[2]), {\n' +
      '  l->path = path;\n' +
      '  l->atime = timespec_to_uint64(&tv[0]);\n' +
      '  l->mtime = timespec_to_uint64(&tv[1]);\n' +
      '}, {\n' +
      '  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));\n' +
      '  FUSE_UINT64_TO_INTS_ARGV(l->atime, 3)\n' +
      '  FUSE_UINT64_TO_INTS_ARGV(l->atime, 5)\n' +
      '})\n',
    to:
      '/* darefs patch: stock fuse-native passed the atime twice, in ms. Now, for atime then mtime:\n' +
      '   seconds low 32 bits (uint32), seconds high 32 bits (int32), tv_nsec (uint32; may be\n' +
      '   UTIME_NOW or UTIME_OMIT). darefs_utimens_ns tells JS which encoding it gets. */\n' +
      'static const uint32_t darefs_utimens_ns = 1;\n' +
      '\n' +
      'FUSE_METHOD_VOID(utimens, 7, 0, (const char *path, const struct timespec tv[2]), {\n' +
      '  l->path = path;\n' +
      '  l->atime = timespec_to_uint64(&tv[0]);\n' +
      '  l->mtime = timespec_to_uint64(&tv[1]);\n' +
      '  l->utimens_tv[0] = tv[0];\n' +
      '  l->utimens_tv[1] = tv[1];\n' +
      '}, {\n' +
      '  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));\n' +
      '  for (int i = 0; i < 2; i++) {\n' +
      '    int64_t sec = (int64_t) l->utimens_tv[i].tv_sec;\n' +
      '    napi_create_uint32(env, (uint32_t) ((uint64_t) sec & 0xffffffffu), &(argv[3 + 3 * i]));\n' +
      '    napi_create_int32(env, (int32_t) (sec >> 32), &(argv[4 + 3 * i]));\n' +
      '    napi_create_uint32(env, (uint32_t) l->utimens_tv[i].tv_nsec, &(argv[5 + 3 * i]));\n' +
      '  }\n' +
      '})\n',
  },
  {
    // Without this flag libfuse 2.9 calls utimens only when BOTH times are set, and silently
    // drops a change of one (touch -m, touch -a); with it, the other time is UTIME_OMIT and
    // "set to the current time" arrives as UTIME_NOW.
    name: 'utimens: let libfuse pass UTIME_NOW and UTIME_OMIT',
    from: '  if (implemented[op_utimens]) ops.utimens = fuse_native_utimens;\n',
    to:
      '  if (implemented[op_utimens]) ops.utimens = fuse_native_utimens;\n' +
      '  if (implemented[op_utimens]) ops.flag_utime_omit_ok = 1; /* darefs patch */\n',
  },
  {
    // With getxattr implemented, the kernel asks for security.capability before EVERY write(2)
    // (file_remove_privs). darefs keeps only user.* attributes, so answer every other name here,
    // on libfuse's thread: a round trip into JavaScript per write would halve small-write speed.
    name: 'getxattr: answer names outside user.* without calling JavaScript',
    from:
      'FUSE_METHOD(getxattr, 4, 1, (const char *path, const char *name, char *value, size_t size), {\n' +
      '  l->path = path;\n',
    to:
      'FUSE_METHOD(getxattr, 4, 1, (const char *path, const char *name, char *value, size_t size), {\n' +
      '  if (strncmp(name, "user.", 5) != 0) return -ENODATA; /* darefs patch: only user.* is kept */\n' +
      '  l->path = path;\n',
  },
  {
    // Stock stat times are unsigned milliseconds: no sub-millisecond part, nothing before 1970.
    // Patched: per time, tv_sec as two uint32 halves (low, high as int32) and tv_nsec: exact,
    // any time ext4 can hold. The array grows from 18 to 21 uint32. darefs_stat_ns = 2 tells JS
    // to send that layout (src/fuse/native.ts toStatArray).
    name: 'stat times: 64-bit seconds and nanoseconds',
    from:
      'static void uint32s_to_timespec (struct timespec* ts, uint32_t** ints) {\n' +
      '  uint64_t ms = uint32s_to_uint64(ints);\n' +
      '  ts->tv_sec = ms / 1000;\n' +
      '  ts->tv_nsec = (ms % 1000) * 1000000;\n' +
      '}\n',
    to:
      '/* darefs patch: stat times arrive as tv_sec low, tv_sec high (signed), tv_nsec. */\n' +
      'static const uint32_t darefs_stat_ns = 2;\n' +
      '\n' +
      'static void uint32s_to_timespec (struct timespec* ts, uint32_t** ints) {\n' +
      '  uint64_t low = *((*ints)++);\n' +
      '  int64_t high = (int32_t) *((*ints)++);\n' +
      '  ts->tv_sec = (time_t) (high * 4294967296LL + (int64_t) low);\n' +
      '  ts->tv_nsec = *((*ints)++);\n' +
      '}\n',
  },
  {
    name: 'thread-local storage for the calling process\'s uid and gid',
    from: '  uid_t uid;\n  gid_t gid;\n  size_t atime;\n',
    to: '  uid_t uid;\n  gid_t gid;\n  uid_t caller_uid; /* darefs patch: fuse_get_context() of create/mkdir/mknod/symlink */\n  gid_t caller_gid;\n  size_t atime;\n',
  },
  ...callerHunks(),
  {
    name: 'export the encoding marker',
    from: '  NAPI_EXPORT_UINT32(op_utimens)\n',
    to: '  NAPI_EXPORT_UINT32(op_utimens)\n  NAPI_EXPORT_UINT32(darefs_utimens_ns)\n  NAPI_EXPORT_UINT32(darefs_stat_ns)\n  NAPI_EXPORT_UINT32(darefs_caller_ids)\n',
  },
];

const PATCH_HASH = sha256(JSON.stringify({ version: EXPECTED_VERSION, hunks: HUNKS }));

function sha256(data) {
  return crypto.createHash('sha256').update(data).digest('hex');
}

function log(msg) {
  console.log(`darefs postinstall: ${msg}`);
}

function warn(msg) {
  console.warn(
    `darefs postinstall: WARNING: ${msg}\n` +
      '  fuse-native stays unpatched: utimens falls back to millisecond atime-only times, and touch -m/-a are ignored ' +
      '(darefs warns once at mount); every write costs a getxattr call into JavaScript; files that other users ' +
      'create through an allow_other mount belong to the daemon\'s user. ' +
      'Rerun with `node scripts/patch-fuse-native.js`.',
  );
}

function countOf(text, needle) {
  let n = 0;
  for (let i = text.indexOf(needle); i !== -1; i = text.indexOf(needle, i + needle.length)) n++;
  return n;
}

/** 'original' | 'patched' | 'unknown' */
function classify(text) {
  if (HUNKS.every((h) => countOf(text, h.from) === 1 && countOf(text, h.to) === 0)) return 'original';
  if (HUNKS.every((h) => countOf(text, h.to) === 1)) return 'patched';
  return 'unknown';
}

function applyPatch(text) {
  return HUNKS.reduce((t, h) => t.replace(h.from, () => h.to), text);
}

function revertPatch(text) {
  return HUNKS.slice().reverse().reduce((t, h) => t.replace(h.to, () => h.from), text);
}

function readMarker(dir) {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, MARKER), 'utf8'));
  } catch {
    return undefined;
  }
}

function binaryIsPatched(file) {
  try {
    return fs.readFileSync(file).includes(Buffer.from(EXPORT_NAME + '\0'));
  } catch {
    return false;
  }
}

function rmrf(p) {
  fs.rmSync(p, { recursive: true, force: true });
}

/** Loads the new addon in a child process (with the bundled libfuse preloaded, as darefs does). */
function checkLoads(fuseDir) {
  const addon = path.join(fuseDir, 'build', 'Release', 'fuse.node');
  const libfuse = path.join(fuseDir, 'build', 'Release', 'libfuse.so');
  const code = `
    const os = require('os');
    try { process.dlopen({ exports: {} }, ${JSON.stringify(libfuse)}, os.constants.dlopen.RTLD_NOW | os.constants.dlopen.RTLD_GLOBAL | 0x1000 /* RTLD_NODELETE */); } catch (e) {}
    const m = { exports: {} };
    process.dlopen(m, ${JSON.stringify(addon)});
    if (m.exports.${EXPORT_NAME} !== 1) throw new Error('${EXPORT_NAME} is ' + m.exports.${EXPORT_NAME});
  `;
  const res = childProcess.spawnSync(process.execPath, ['-e', code], { encoding: 'utf8', timeout: 60_000 });
  if (res.status !== 0) throw new Error(`the rebuilt addon does not load: ${(res.stderr || res.error || '').toString().trim()}`);
}

function main() {
  if (process.env.DAREFS_SKIP_FUSE_PATCH) {
    log('DAREFS_SKIP_FUSE_PATCH is set: fuse-native left as it is');
    return;
  }
  let pkgFile;
  try {
    pkgFile = require.resolve('fuse-native/package.json', { paths: [path.resolve(__dirname, '..')] });
  } catch {
    warn('fuse-native is not installed');
    return;
  }
  const fuseDir = path.dirname(pkgFile);
  const version = JSON.parse(fs.readFileSync(pkgFile, 'utf8')).version;
  if (version !== EXPECTED_VERSION) {
    warn(`fuse-native is ${version}, the patch is for ${EXPECTED_VERSION}`);
    return;
  }
  const sourceFile = path.join(fuseDir, SOURCE);
  const pristineFile = path.join(fuseDir, PRISTINE);
  let source = fs.readFileSync(sourceFile, 'utf8');
  let state = classify(source);
  if (state === 'unknown' && fs.existsSync(pristineFile)) {
    // Patched by an earlier version of this script: start again from the stock source.
    const pristine = fs.readFileSync(pristineFile, 'utf8');
    if (classify(pristine) === 'original') {
      source = pristine;
      state = 'original';
    }
  }
  if (state === 'unknown') {
    warn(`${sourceFile} does not contain the expected fuse-native ${EXPECTED_VERSION} text`);
    return;
  }
  const buildDir = path.join(fuseDir, 'build');
  const prevDir = path.join(fuseDir, PREV_BUILD);
  const addon = path.join(buildDir, 'Release', 'fuse.node');
  const libfuse = path.join(buildDir, 'Release', 'libfuse.so');
  const marker = readMarker(fuseDir);

  // A run killed during its rebuild leaves the previous build aside: put it back first.
  if (fs.existsSync(prevDir)) {
    if (!binaryIsPatched(addon)) {
      rmrf(buildDir);
      fs.renameSync(prevDir, buildDir);
    } else {
      rmrf(prevDir);
    }
  }

  if (state === 'patched' && marker && marker.patch === PATCH_HASH && binaryIsPatched(addon) && fs.existsSync(libfuse)) {
    log(`fuse-native ${version} already patched; nothing to do`);
    return;
  }

  const nodeGyp = findNodeGyp();
  if (!nodeGyp) {
    if (state === 'patched') fs.writeFileSync(sourceFile, revertPatch(source));
    warn('node-gyp not found (neither npm_config_node_gyp nor npm\'s bundled copy)');
    return;
  }

  const original = state === 'original' ? source : revertPatch(source);
  const patched = applyPatch(original);
  if (classify(patched) !== 'patched' || revertPatch(patched) !== original) {
    warn('the patch does not apply cleanly (internal check failed)');
    return;
  }
  rmrf(path.join(fuseDir, MARKER));
  if (!fs.existsSync(pristineFile)) fs.writeFileSync(pristineFile, original);
  fs.writeFileSync(sourceFile, patched);

  // node-gyp rebuild starts with removing build/: keep the previous build aside until the new one works.
  const hadBuild = fs.existsSync(buildDir);
  if (hadBuild) fs.renameSync(buildDir, prevDir);
  const started = Date.now();
  log(`patching fuse-native ${version} (exact times, getxattr fast path, caller ids) and rebuilding it with ${nodeGyp}`);
  try {
    rebuild(nodeGyp, fuseDir);
    if (!binaryIsPatched(addon)) throw new Error(`${addon} was not rebuilt from the patched source`);
    // binding.gyp's "postinstall" target copies the bundled libfuse.so next to the addon.
    if (!fs.existsSync(libfuse)) {
      const prevLib = path.join(prevDir, 'Release', 'libfuse.so');
      if (fs.existsSync(prevLib)) fs.copyFileSync(prevLib, libfuse);
    }
    checkLoads(fuseDir);
  } catch (err) {
    fs.writeFileSync(sourceFile, original);
    rmrf(buildDir);
    if (hadBuild) fs.renameSync(prevDir, buildDir);
    warn(`rebuilding fuse-native failed; original source and previous binary restored.\n${err && err.message ? err.message : err}`);
    return;
  }
  rmrf(prevDir);
  fs.writeFileSync(
    path.join(fuseDir, MARKER),
    JSON.stringify({ patch: PATCH_HASH, source: sha256(patched), addon: sha256(fs.readFileSync(addon)) }, null, 2) + '\n',
  );
  log(`fuse-native patched and rebuilt in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

try {
  main();
} catch (err) {
  // Never break the install.
  warn(`unexpected error: ${err && err.stack ? err.stack : err}`);
}
process.exitCode = 0;
