#!/usr/bin/env node
/*
 * postinstall: build darefs's own small Node-API addon (native/darefs_sys.c: extended attributes
 * and mknod on the cipher directory, which Node's fs does not offer) with npm's node-gyp.
 *
 * Never breaks the install: when the build fails it warns and exits 0, and darefs runs without
 * the addon (extended attributes answer ENOTSUP, mknod makes FIFOs only; the mount logs this once).
 * Skips the build when the addon was built from the same source (hash kept beside it).
 * Environment: DAREFS_SKIP_NATIVE=1 skips it.
 */
'use strict';

const childProcess = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { findNodeGyp, rebuild } = require('./node-gyp-runner');

const dir = path.resolve(__dirname, '..', 'native');
const addon = path.join(dir, 'build', 'Release', 'darefs_sys.node');
const stamp = path.join(dir, 'build', 'darefs-source.sha256');

function log(msg) {
  console.log(`darefs postinstall: ${msg}`);
}

function warn(msg) {
  console.warn(
    `darefs postinstall: WARNING: ${msg}\n` +
      '  darefs will run without native/darefs_sys: no extended attributes, mknod for FIFOs only. ' +
      'Rerun with `node scripts/build-native.js`.',
  );
}

function sourceHash() {
  const h = crypto.createHash('sha256');
  for (const f of ['binding.gyp', 'darefs_sys.c']) h.update(fs.readFileSync(path.join(dir, f)));
  return h.digest('hex');
}

function checkLoads() {
  const code = `const m = { exports: {} }; process.dlopen(m, ${JSON.stringify(addon)});
    for (const f of ['lgetxattr', 'lsetxattr', 'llistxattr', 'lremovexattr', 'mknod', 'fcopyxattrs', 'lutimens'])
      if (typeof m.exports[f] !== 'function') throw new Error('missing ' + f);`;
  const res = childProcess.spawnSync(process.execPath, ['-e', code], { encoding: 'utf8', timeout: 60_000 });
  if (res.status !== 0) throw new Error(`the addon does not load: ${(res.stderr || res.error || '').toString().trim()}`);
}

function main() {
  if (process.env.DAREFS_SKIP_NATIVE) {
    log('DAREFS_SKIP_NATIVE is set: native/darefs_sys not built');
    return;
  }
  const hash = sourceHash();
  if (fs.existsSync(addon) && fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8').trim() === hash) {
    log('native/darefs_sys already built; nothing to do');
    return;
  }
  const nodeGyp = findNodeGyp();
  if (!nodeGyp) {
    warn("node-gyp not found (neither npm_config_node_gyp nor npm's bundled copy)");
    return;
  }
  const started = Date.now();
  try {
    rebuild(nodeGyp, dir);
    checkLoads();
  } catch (err) {
    fs.rmSync(path.join(dir, 'build'), { recursive: true, force: true });
    warn(`building native/darefs_sys failed.\n${err && err.message ? err.message : err}`);
    return;
  }
  fs.writeFileSync(stamp, `${hash}\n`);
  log(`native/darefs_sys built in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

try {
  main();
} catch (err) {
  warn(`unexpected error: ${err && err.stack ? err.stack : err}`);
}
process.exitCode = 0;
