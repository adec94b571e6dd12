#!/usr/bin/env node
/*
 * postinstall: build darefs's own small Node-API addons with npm's node-gyp: native/darefs_sys.c
 * (extended attributes and mknod on the cipher directory, which Node's fs does not offer) and
 * native/darefs_fuse.c (/dev/fuse, mount(2), the request reader of darefs's own FUSE transport).
 *
 * Never breaks the install: when a build fails it warns and exits 0, and darefs runs without that
 * addon (without darefs_sys: extended attributes answer ENOTSUP, mknod makes FIFOs only; without
 * darefs_fuse: only the fuse-native transport); one failing does not keep the other from being
 * built. Skips the build when both were built from the same sources (hash kept beside them).
 * Environment: DAREFS_SKIP_NATIVE=1 skips it.
 */
'use strict';

const childProcess = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { findNodeGyp, rebuild } = require('./node-gyp-runner');

const dir = path.resolve(__dirname, '..', 'native');
const release = path.join(dir, 'build', 'Release');
const stamp = path.join(dir, 'build', 'darefs-source.sha256');

/** Each addon, the exports a working build has, and what darefs loses without it. */
const ADDONS = [
  {
    name: 'darefs_sys',
    exports: ['lgetxattr', 'lsetxattr', 'llistxattr', 'lremovexattr', 'mknod', 'fcopyxattrs', 'lutimens'],
    without: 'no extended attributes, mknod for FIFOs only',
  },
  {
    name: 'darefs_fuse',
    exports: ['openDevice', 'mount', 'umount', 'socketpair', 'recvFd', 'startReader'],
    without: "no kernel transport of darefs's own (fuse-native only)",
  },
];

function addonPath(a) {
  return path.join(release, `${a.name}.node`);
}

function log(msg) {
  console.log(`darefs postinstall: ${msg}`);
}

function warn(msg, addons = ADDONS) {
  console.warn(
    `darefs postinstall: WARNING: ${msg}\n` +
      addons.map((a) => `  darefs will run without native/${a.name}: ${a.without}.\n`).join('') +
      '  Rerun with `node scripts/build-native.js`.',
  );
}

function sourceHash() {
  const h = crypto.createHash('sha256');
  for (const f of ['binding.gyp', 'napi_common.h', ...ADDONS.map((a) => `${a.name}.c`)]) h.update(fs.readFileSync(path.join(dir, f)));
  return h.digest('hex');
}

/** Loads the addon in a child (a crash there must not take the install down); throws why not. */
function checkLoads(a) {
  const file = addonPath(a);
  if (!fs.existsSync(file)) throw new Error(`${file} was not built`);
  const code = `const m = { exports: {} }; process.dlopen(m, ${JSON.stringify(file)});
    for (const f of ${JSON.stringify(a.exports)})
      if (typeof m.exports[f] !== 'function') throw new Error('missing ' + f);`;
  const res = childProcess.spawnSync(process.execPath, ['-e', code], { encoding: 'utf8', timeout: 60_000 });
  if (res.status !== 0) throw new Error(`the addon does not load: ${(res.stderr || res.error || '').toString().trim()}`);
}

function main() {
  if (process.env.DAREFS_SKIP_NATIVE) {
    log('DAREFS_SKIP_NATIVE is set: native addons not built');
    return;
  }
  const hash = sourceHash();
  if (ADDONS.every((a) => fs.existsSync(addonPath(a))) && fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8').trim() === hash) {
    log('native addons already built; nothing to do');
    return;
  }
  const nodeGyp = findNodeGyp();
  if (!nodeGyp) {
    warn("node-gyp not found (neither npm_config_node_gyp nor npm's bundled copy)");
    return;
  }
  const started = Date.now();
  let buildError;
  // make -k: one addon that fails to compile must not keep the other from being built.
  const makeflags = process.env.MAKEFLAGS;
  process.env.MAKEFLAGS = makeflags ? `${makeflags} -k` : '-k';
  try {
    rebuild(nodeGyp, dir);
  } catch (err) {
    buildError = err;
  } finally {
    if (makeflags === undefined) delete process.env.MAKEFLAGS;
    else process.env.MAKEFLAGS = makeflags;
  }
  const failed = [];
  for (const a of ADDONS) {
    try {
      checkLoads(a);
    } catch (err) {
      fs.rmSync(addonPath(a), { force: true });
      failed.push({ addon: a, why: err && err.message ? err.message : String(err) });
    }
  }
  if (failed.length === ADDONS.length) fs.rmSync(path.join(dir, 'build'), { recursive: true, force: true });
  const built = ADDONS.filter((a) => !failed.some((f) => f.addon === a)).map((a) => `native/${a.name}`);
  if (built.length) log(`${built.join(' and ')} built in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  if (failed.length) {
    const why = [buildError && buildError.message, ...failed.map((f) => `native/${f.addon.name}: ${f.why}`)].filter(Boolean);
    warn(`building ${failed.map((f) => `native/${f.addon.name}`).join(' and ')} failed.\n${why.join('\n')}`, failed.map((f) => f.addon));
    // no stamp: the next install tries again
    fs.rmSync(stamp, { force: true });
    return;
  }
  fs.writeFileSync(stamp, `${hash}\n`);
}

try {
  main();
} catch (err) {
  warn(`unexpected error: ${err && err.stack ? err.stack : err}`);
}
process.exitCode = 0;
