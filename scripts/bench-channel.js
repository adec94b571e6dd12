#!/usr/bin/env node
/*
 * Round trip of darefs's own FUSE channel (src/fuse/kernel/channel.ts): mounts a null file system
 * answered by a few lines here (GETATTR of the root with attr_valid 0, so every stat reaches us),
 * then a child process stats the mount point in a loop; prints µs per request as the child sees
 * it, and how many requests came per batch. Run as root after `npm run build`:
 *
 *   node scripts/bench-channel.js [STATS]      (default 20000)
 */
'use strict';

const { spawnSync, spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { Channel, closeMount, openMount } = require('../dist/src/fuse/kernel/channel');

const count = Number(process.argv[2] || 20000);

function reply(unique, error, bodyLength) {
  const out = Buffer.alloc(16 + bodyLength);
  out.writeUInt32LE(out.length, 0);
  out.writeInt32LE(error, 4);
  out.writeBigUInt64LE(unique, 8);
  return out;
}

function answer(req) {
  const opcode = req.readUInt32LE(4);
  const unique = req.readBigUInt64LE(8);
  if (opcode === 2 || opcode === 42) return undefined; // FORGET, BATCH_FORGET
  if (opcode === 26) {
    // INIT: 7.38, max_write 128 KiB, no flags
    const out = reply(unique, 0, 64);
    out.writeUInt32LE(7, 16);
    out.writeUInt32LE(38, 20);
    out.writeUInt32LE(req.readUInt32LE(48), 24);
    out.writeUInt32LE(131072, 36);
    out.writeUInt32LE(1, 40);
    return out;
  }
  if (opcode === 3) {
    // GETATTR: a directory, valid for 0 s
    const out = reply(unique, 0, 104);
    out.writeBigUInt64LE(1n, 32);
    out.writeUInt32LE(0o40755, 16 + 16 + 60);
    out.writeUInt32LE(2, 16 + 16 + 64);
    return out;
  }
  return reply(unique, -os.constants.errno.ENOSYS, 0);
}

async function main() {
  if (process.geteuid() !== 0) throw new Error('run as root');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'darefs-bench-channel-'));
  const mnt = path.join(dir, 'mnt');
  fs.mkdirSync(mnt);
  const { fd } = await openMount({ mountpoint: mnt, fsname: 'darefs-bench', subtype: 'darefs', allowOther: false, defaultPermissions: false, readOnly: false });
  const channel = new Channel(fd);
  let requests = 0;
  let batches = 0;
  let writes = 0;
  let writeNs = 0n;
  let ended;
  const done = new Promise((resolve) => (ended = resolve));
  channel.start(
    (reqs) => {
      batches++;
      for (const req of reqs) {
        requests++;
        const out = answer(req);
        if (!out) continue;
        const w0 = process.hrtime.bigint();
        channel.write([out]);
        writeNs += process.hrtime.bigint() - w0;
        writes++;
      }
    },
    (errno) => ended(errno),
  );
  try {
    const code = `const fs = require('fs'); const p = ${JSON.stringify(mnt)};
      for (let i = 0; i < 1000; i++) fs.statSync(p);
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < ${count}; i++) fs.statSync(p);
      console.log(Number(process.hrtime.bigint() - t0) / 1e3 / ${count});`;
    const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const before = requests;
    const cpu0 = process.cpuUsage();
    await new Promise((resolve) => child.once('exit', resolve));
    const cpu = process.cpuUsage(cpu0);
    const served = requests - before;
    console.log(`stat round trip: ${Number(out).toFixed(1)} µs per request (${count} stats after 1000 warm-up)`);
    console.log(`daemon CPU: ${((cpu.user + cpu.system) / served).toFixed(1)} µs per request; ${(requests / batches).toFixed(2)} requests per batch; ${(Number(writeNs) / 1e3 / writes).toFixed(1)} µs per reply write (fs.writeSync)`);
  } finally {
    await closeMount(mnt, { lazy: true }).catch(() => spawnSync('umount', ['-l', mnt]));
    await Promise.race([done, new Promise((resolve) => setTimeout(resolve, 5000))]);
    channel.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
