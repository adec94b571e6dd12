/**
 * FORMAT.md §5 through the mount: never seal two different plaintexts under one key and AEAD
 * nonce. Seeded random small writes (and some truncates) to one file through the mount, an fsync
 * after every few; after every fsync the cipher file is scanned: every (prefix, AEAD nonce) pair —
 * the prefix gives the key, header bytes 4..15 are the DARE 1.0 AEAD nonce — must map to exactly
 * one sealed package ever seen. And an in-place write re-seals only what it covers: a 1-byte
 * write in the middle of a multi-MiB file changes at most one package (65,568 bytes) of its
 * cipher file. Replay with DAREFS_SEED.
 */
import test from 'ava';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { HEADER_SIZE, MAX_PACKAGE, PREFIX_SIZE, plaintextSize } from '../src/dare';
import { prng } from './helpers/darefs';
import { assertNoFuseMountsLeft, cleanupLeftovers, sleep } from './helpers/mount';
import { decryptCipherFile, randomBytesFrom, readFully, sha256, stopCleanly, volumeKeys, withMasterMount, writeFileSynced } from './helpers/rw';

const P = 65536;

test.after.always(async () => {
  await cleanupLeftovers();
  await assertNoFuseMountsLeft();
});

/** Every package of every scan: (prefix, nonce) → hash of the sealed package. */
class NonceAudit {
  readonly seen = new Map<string, string>();
  scans = 0;
  packages = 0;
  readonly conflicts: string[] = [];

  scan(cipher: Buffer, when: string): void {
    this.scans++;
    const prefix = cipher.subarray(0, PREFIX_SIZE).toString('hex');
    for (let at = PREFIX_SIZE, index = 0; at < cipher.length; at += MAX_PACKAGE, index++) {
      const pkg = cipher.subarray(at, Math.min(cipher.length, at + MAX_PACKAGE));
      if (pkg[0] !== 0x10) throw new Error(`${when}: package ${index} is not DARE 1.0 (version byte ${pkg[0]})`);
      if (pkg.readUInt32LE(4) !== index) throw new Error(`${when}: package ${index} has sequence number ${pkg.readUInt32LE(4)}`);
      const nonce = pkg.subarray(4, HEADER_SIZE).toString('hex');
      const id = `${prefix}:${nonce}`;
      const digest = sha256(pkg);
      const before = this.seen.get(id);
      if (before !== undefined && before !== digest) this.conflicts.push(`${when}: package ${index} reuses nonce ${nonce} under prefix ${prefix.slice(0, 16)}… for another sealed content`);
      this.seen.set(id, digest);
      this.packages++;
    }
  }
}

test.serial('no (key, nonce) pair ever seals two contents: seeded writes with fsyncs, scanned after every fsync', async (t) => {
  t.timeout(120_000);
  const seed = Number(process.env.DAREFS_SEED ?? Date.now() % 1_000_000);
  t.log(`seed ${seed} (replay with DAREFS_SEED=${seed})`);
  const rand = prng(seed);
  const int = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1));
  const WRITES = Number(process.env.DAREFS_NONCE_WRITES ?? 2000);
  const MAX = 8 * P + 100;
  await withMasterMount(t, async (m) => {
    const cipherFile = path.join(m.cipherDir, 'audited.bin');
    const fh = await fsp.open(path.join(m.mountpoint, 'audited.bin'), 'w+');
    let model = Buffer.alloc(0);
    const audit = new NonceAudit();
    let prefix: string | undefined;
    try {
      let sinceSync = 0;
      for (let i = 0; i < WRITES; i++) {
        const r = rand();
        if (r < 0.05) {
          const size = r < 0.02 ? int(0, MAX) : Math.max(0, int(0, 8) * P + int(-3, 3));
          await fh.truncate(size);
          const next = Buffer.alloc(size);
          model.copy(next, 0, 0, Math.min(size, model.length));
          model = next;
        } else {
          const len = rand() < 0.8 ? int(1, 16) : int(17, 3000);
          // Mostly inside the file, near package boundaries often, sometimes past the end.
          let off = rand() < 0.4 ? int(0, 8) * P + int(-20, 20) : int(0, model.length + (rand() < 0.1 ? 100_000 : 0));
          off = Math.max(0, Math.min(off, MAX - len));
          // Sometimes write back bytes already there: an unchanged plaintext re-sealed is fine,
          // a changed one under a seen nonce is not.
          const data = rand() < 0.1 && off + len <= model.length ? Buffer.from(model.subarray(off, off + len)) : randomBytesFrom(rand, len);
          const { bytesWritten } = await fh.write(data, 0, len, off);
          t.is(bytesWritten, len);
          if (off + len > model.length) {
            const next = Buffer.alloc(off + len);
            model.copy(next);
            model = next;
          }
          data.copy(model, off);
        }
        if (++sinceSync >= int(1, 5) || i === WRITES - 1) {
          sinceSync = 0;
          await (rand() < 0.3 ? fh.datasync() : fh.sync());
          // The cipher directory is a plain directory: read it directly.
          const cipher = fs.readFileSync(cipherFile);
          t.is(plaintextSize(cipher.length), model.length, `cipher size after write ${i}`);
          const p = cipher.subarray(0, PREFIX_SIZE).toString('hex');
          if (prefix === undefined) prefix = p;
          t.is(p, prefix, 'a 1.0 file keeps its prefix (and key) across in-place writes');
          audit.scan(cipher, `after write ${i}`);
        }
      }
      const back = await readFully(fh, model.length + 1);
      t.true(back.equals(model), 'content through the mount equals the model');
    } finally {
      await fh.close();
    }
    t.deepEqual(audit.conflicts, []);
    t.log(`${audit.scans} scans, ${audit.packages} packages seen, ${audit.seen.size} distinct (prefix, nonce) pairs`);
    t.true(audit.seen.size > 1000, 'enough distinct seals to mean something');
    await stopCleanly(t, m);
    const plain = await decryptCipherFile(await volumeKeys(m.cipherDir), cipherFile);
    t.true(plain.equals(model), 'the cipher file decrypts to the model');
  });
});

test.serial('a 1-byte write in the middle of a multi-MiB file re-seals one package: at most 65,568 cipher bytes change', async (t) => {
  t.timeout(90_000);
  await withMasterMount(t, async (m) => {
    const name = 'big.bin';
    const size = 6 * 1024 * 1024 + 12345;
    const plain = randomBytesFrom(prng(42), size);
    await writeFileSynced(path.join(m.mountpoint, name), plain);
    const cipherFile = path.join(m.cipherDir, name);
    for (const [offset, how] of [
      [3 * 1024 * 1024 + 777, 'fsync'],
      [5 * P, 'fsync'],
      [2 * P - 1, 'close'],
      [size - 1, 'close'],
    ] as Array<[number, 'fsync' | 'close']>) {
      const before = fs.readFileSync(cipherFile);
      const fh = await fsp.open(path.join(m.mountpoint, name), 'r+');
      try {
        plain[offset] ^= 0x5a;
        await fh.write(plain, offset, 1, offset);
        if (how === 'fsync') await fh.sync();
      } finally {
        await fh.close();
      }
      // A close leaves the packages in the journal until the next checkpoint (--commit 0.2).
      if (how === 'close') await sleep(800);
      const after = fs.readFileSync(cipherFile);
      t.is(after.length, before.length, 'cipher size unchanged');
      let changed = 0;
      let lo = Infinity;
      let hi = -1;
      for (let i = 0; i < after.length; i++) {
        if (after[i] !== before[i]) {
          changed++;
          lo = Math.min(lo, i);
          hi = Math.max(hi, i);
        }
      }
      const pkg = Math.floor(offset / P);
      const start = PREFIX_SIZE + pkg * MAX_PACKAGE;
      t.true(changed > 0 && changed <= MAX_PACKAGE, `1-byte write at ${offset} (${how}) changed ${changed} cipher bytes`);
      t.true(lo >= start && hi < start + MAX_PACKAGE, `changes stay inside package ${pkg}: [${lo}, ${hi}]`);
      t.false(after.subarray(start + 4, start + HEADER_SIZE).equals(before.subarray(start + 4, start + HEADER_SIZE)), 'the re-sealed package has a fresh nonce');
    }
    const back = await fsp.readFile(path.join(m.mountpoint, name));
    t.true(back.equals(plain), 'content through the mount');
    await stopCleanly(t, m);
    t.true((await decryptCipherFile(await volumeKeys(m.cipherDir), cipherFile)).equals(plain), 'the cipher file decrypts to the changed plaintext');
  }, { extra: () => ['--commit', '0.2'] });
});
