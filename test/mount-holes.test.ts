/**
 * A write far past the end through the mount (issue 10, item 5): a 1-byte write at 1 GiB must
 * not stall the daemon (a read of another file is answered meanwhile), must not grow the
 * daemon's memory by the size of the hole, and leaves a stream that decrypts to zeros then the
 * byte.
 */
import test from 'ava';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { MAX_PAYLOAD, cipherSize } from '../src/dare';
import { prng } from './helpers/darefs';
import { expectZerosBetween } from './helpers/store';
import { assertNoFuseMountsLeft, cleanupLeftovers } from './helpers/mount';
import { randomBytesFrom, readFully, volumeKeys, withMasterMount } from './helpers/rw';

test.after.always(async () => {
  await cleanupLeftovers();
  await assertNoFuseMountsLeft();
});

const P = MAX_PAYLOAD;
const GiB = 1024 * 1024 * 1024;

/** Peak resident set (VmHWM) of a process, in bytes. */
function peakRss(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

test.serial('a 1-byte write at 1 GiB through the mount: another file is read meanwhile, the daemon stays small, the file decrypts to zeros then the byte', async (t) => {
  t.timeout(300_000);
  const rand = prng(0x401e0201);
  const head = randomBytesFrom(rand, P + 777);
  const other = randomBytesFrom(rand, 4 * P);
  const byte = Buffer.from([0x3c]);
  await withMasterMount(t, async (m) => {
    await fsp.writeFile(path.join(m.mountpoint, 'other.bin'), other);
    await fsp.writeFile(path.join(m.mountpoint, 'big.bin'), head);
    // A fresh daemon (and kernel page cache): the read below has to reach the daemon.
    await m.stop();
    await m.respawn();
    const pid = m.daemon.pid;
    const before = peakRss(pid);
    const big = await fsp.open(path.join(m.mountpoint, 'big.bin'), 'r+');
    const reader = await fsp.open(path.join(m.mountpoint, 'other.bin'), 'r');
    try {
      const started = Date.now();
      let writeMs = -1;
      const writing = big.write(byte, 0, 1, GiB).then(() => {
        writeMs = Date.now() - started;
      });
      await new Promise((resolve) => setTimeout(resolve, 300));
      const asked = Date.now();
      const got = await readFully(reader, 2 * P, P + 5);
      const readMs = Date.now() - asked;
      t.true(got.equals(other.subarray(P + 5, 3 * P + 5)), 'the other file reads right');
      t.is(writeMs, -1, `the read (${readMs} ms) is answered while the write at 1 GiB is still running`);
      await writing;
      await big.sync();
      t.log(`write at 1 GiB took ${writeMs} ms; the read during it ${readMs} ms`);
      const grown = peakRss(pid) - before;
      t.log(`daemon peak RSS ${(before / 1e6).toFixed(0)} MB before, +${(grown / 1e6).toFixed(0)} MB during`);
      t.true(grown < 150e6, `daemon peak RSS grew by ${grown} bytes`);
      t.deepEqual(await readFully(big, 20, GiB - 19), Buffer.concat([Buffer.alloc(19), byte]), 'reads back through the mount');
    } finally {
      await big.close();
      await reader.close();
    }
    await m.stop();
    const file = path.join(m.cipherDir, 'big.bin');
    t.is(fs.statSync(file).size, cipherSize(GiB + 1));
    await expectZerosBetween(t, file, await volumeKeys(m.cipherDir), GiB + 1, head, byte);
  });
});
