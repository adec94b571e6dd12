/*
 * Finding and running node-gyp for the install scripts (patch-fuse-native.js, build-native.js).
 * npm bundles node-gyp and, as an install script's parent, says where it is and where Node's
 * headers are; outside npm (a manual rerun) both are looked up next to this Node. Plain Node.js.
 */
'use strict';

const childProcess = require('child_process');
const fs = require('fs');
const path = require('path');

function findNodeGyp() {
  const candidates = [];
  if (process.env.npm_config_node_gyp) candidates.push(process.env.npm_config_node_gyp);
  const npmDirs = [
    path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm'),
    path.join(path.dirname(process.execPath), 'node_modules', 'npm'),
  ];
  for (const paths of [npmDirs, [__dirname]]) {
    try {
      candidates.push(require.resolve('node-gyp/bin/node-gyp.js', { paths }));
    } catch {
      // not there
    }
  }
  return candidates.find((c) => /\.js$/.test(c) && fs.existsSync(c));
}

/** Node's headers: npm passes its `nodedir` setting as npm_config_nodedir; outside npm, look. */
function nodeGypArgs() {
  const args = ['rebuild'];
  if (!process.env.npm_config_nodedir) {
    const prefix = path.resolve(path.dirname(process.execPath), '..');
    if (fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);
  }
  return args;
}

/** `node-gyp rebuild` in dir; throws with the tail of its output when it fails. */
function rebuild(nodeGyp, dir) {
  const res = childProcess.spawnSync(process.execPath, [nodeGyp, ...nodeGypArgs()], {
    cwd: dir,
    encoding: 'utf8',
    timeout: 10 * 60_000,
    maxBuffer: 64 << 20,
  });
  if (res.error) throw res.error;
  if (res.status !== 0) {
    const out = `${res.stdout || ''}${res.stderr || ''}`.trim().split('\n').slice(-25).join('\n');
    throw new Error(`node-gyp rebuild exited with ${res.status === null ? res.signal : res.status}:\n${out}`);
  }
}

module.exports = { findNodeGyp, rebuild };
