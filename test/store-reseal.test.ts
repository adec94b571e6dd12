/**
 * Re-sealing is local (issue 4, FORMAT.md §5): a small change to a 1.0 stream re-seals only the
 * packages it touches, in place, under the same prefix; the first change to a 2.0 stream writes a
 * new stream (new prefix) to a temp file beside it and renames it over the original.
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Cipher, HEADER_SIZE, MAX_PACKAGE, MAX_PAYLOAD, PREFIX_SIZE, Version, cipherSize, packageIndex, packageOffset } from '../src/dare';
import { TEMP_PREFIX } from '../src/store';
import { loadSysCalls, splitNames } from '../src/sys';
import {
  Rng,
  SETTINGS_KEEP_V20,
  SETTINGS_V10,
  differingBytes,
  inspectCipherFile,
  makeVolume,
  masterKeys,
  seedFor,
  tempDir,
  tempLeftovers,
  writeStreamFile,
  realPathOf,
} from './helpers/store';

const P = MAX_PAYLOAD;

// Every rename in this worker, to see how a stream rewrite replaces the file.
const renames: Array<[string, string]> = [];
const nodeFs: typeof fs = require('node:fs');
const originalRename = nodeFs.renameSync;
nodeFs.renameSync = (from: fs.PathLike, to: fs.PathLike): void => {
  renames.push([realPathOf(String(from)), realPathOf(String(to))]);
  originalRename(from, to);
};
const renamesInto = (dir: string): Array<[string, string]> => renames.filter(([, to]) => path.dirname(to) === dir);

test('1.0: a 1-byte write re-seals one package in place (≤ 65568 cipher bytes change, same prefix)', async (t) => {
  const seed = seedFor(0x5ea10001);
  t.log(`seed ${seed}`);
  const rng = new Rng(seed);
  const dir = tempDir(t, 'reseal');
  const mk = masterKeys(rng.bytes(32));
  const cipherPath = path.join(dir, 'big.bin');
  const size = 4 * 1024 * 1024 + 1000; // 65 packages, the last one short
  const content = rng.bytes(size);
  await writeStreamFile(cipherPath, content, mk, Version.V10);
  const ino = fs.statSync(cipherPath).ino;

  // middle, first byte, last byte, both sides of a package boundary
  const positions = [2 * 1024 * 1024 + 12345, 0, size - 1, 10 * P, 10 * P - 1, 33 * P + P / 2];
  for (const off of positions) {
    const before = fs.readFileSync(cipherPath);
    const vol = makeVolume(mk.keys);
    const file = await vol.open(cipherPath, 'big.bin');
    const byte = Buffer.from([content[off] ^ (1 + rng.int(255))]);
    await file.write(off, byte);
    byte.copy(content, off);
    await file.flush();
    t.is(vol.counters.packagesSealed, 1, `write at ${off}: one package sealed`);
    t.true(vol.counters.packagesOpened <= 1, `write at ${off}: at most one package read`);
    await vol.release(file);
    const after = fs.readFileSync(cipherPath);
    t.is(after.length, before.length, 'cipher size unchanged');
    const diff = differingBytes(before, after);
    const k = packageIndex(off);
    t.true(diff.count > 0 && diff.count <= MAX_PACKAGE, `write at ${off}: ${diff.count} cipher bytes changed`);
    t.true(diff.first >= packageOffset(k) && diff.last < packageOffset(k + 1), `write at ${off}: changes [${diff.first}, ${diff.last}] outside package ${k}`);
    t.true(after.subarray(0, PREFIX_SIZE).equals(before.subarray(0, PREFIX_SIZE)), 'prefix unchanged');
    // fresh random 8 bytes in the re-sealed 1.0 header, sequence number kept
    const h0 = before.subarray(packageOffset(k), packageOffset(k) + HEADER_SIZE);
    const h1 = after.subarray(packageOffset(k), packageOffset(k) + HEADER_SIZE);
    t.true(h1.subarray(0, 8).equals(h0.subarray(0, 8)), 'version, cipher, length and sequence unchanged');
    t.false(h1.subarray(8, 16).equals(h0.subarray(8, 16)), 'fresh random nonce bytes');
  }
  t.is(fs.statSync(cipherPath).ino, ino, 'rewritten in place, not replaced');
  await inspectCipherFile(cipherPath, mk, content);
  t.deepEqual(renamesInto(dir), []);
});

test('1.0: a write spanning a package boundary re-seals exactly the two packages', async (t) => {
  const rng = new Rng(seedFor(0x5ea10002));
  const dir = tempDir(t, 'reseal');
  const mk = masterKeys(rng.bytes(32));
  const cipherPath = path.join(dir, 'f.bin');
  const content = rng.bytes(20 * P + 5);
  await writeStreamFile(cipherPath, content, mk, Version.V10);
  const before = fs.readFileSync(cipherPath);
  const vol = makeVolume(mk.keys);
  const file = await vol.open(cipherPath, 'f.bin');
  const data = rng.bytes(100);
  await file.write(7 * P - 50, data);
  data.copy(content, 7 * P - 50);
  await file.flush();
  t.is(vol.counters.packagesSealed, 2);
  await vol.release(file);
  const after = fs.readFileSync(cipherPath);
  const diff = differingBytes(before, after);
  t.true(diff.first >= packageOffset(6) && diff.last < packageOffset(8), `changes in [${diff.first}, ${diff.last}]`);
  await inspectCipherFile(cipherPath, mk, content);
});

test('1.0: appending re-seals only the old last package; shrinking re-seals only the new last one', async (t) => {
  const rng = new Rng(seedFor(0x5ea10003));
  const dir = tempDir(t, 'reseal');
  const mk = masterKeys(rng.bytes(32));
  const cipherPath = path.join(dir, 'f.bin');
  let content = rng.bytes(10 * P + 300);
  await writeStreamFile(cipherPath, content, mk, Version.V10);
  const vol = makeVolume(mk.keys);

  let before = fs.readFileSync(cipherPath);
  let file = await vol.open(cipherPath, 'f.bin');
  const tail = rng.bytes(2 * P);
  await file.write(content.length, tail);
  content = Buffer.concat([content, tail]);
  await vol.release(file);
  let after = fs.readFileSync(cipherPath);
  t.is(after.length, cipherSize(content.length));
  t.true(after.subarray(0, packageOffset(10)).equals(before.subarray(0, packageOffset(10))), 'packages 0..9 untouched by the append');
  await inspectCipherFile(cipherPath, mk, content);

  before = after;
  file = await vol.open(cipherPath, 'f.bin');
  await file.truncate(4 * P + 77);
  content = content.subarray(0, 4 * P + 77);
  await vol.release(file);
  after = fs.readFileSync(cipherPath);
  t.is(after.length, cipherSize(content.length));
  t.true(after.subarray(0, packageOffset(4)).equals(before.subarray(0, packageOffset(4))), 'packages 0..3 untouched by the shrink');
  await inspectCipherFile(cipherPath, mk, content);

  // Shrinking to a package boundary re-seals nothing: the last package is already whole.
  before = after;
  file = await vol.open(cipherPath, 'f.bin');
  const sealed = vol.counters.packagesSealed;
  await file.truncate(2 * P);
  content = content.subarray(0, 2 * P);
  await vol.release(file);
  t.is(vol.counters.packagesSealed, sealed);
  after = fs.readFileSync(cipherPath);
  t.true(after.equals(before.subarray(0, cipherSize(2 * P))), 'a plain cut of the cipher file');
  await inspectCipherFile(cipherPath, mk, content);
});

test('2.0: the first change writes a new 1.0 stream (new prefix) via a temp file renamed over the original', async (t) => {
  const rng = new Rng(seedFor(0x5ea10004));
  const dir = tempDir(t, 'reseal20');
  const mk = masterKeys(rng.bytes(32));
  const cipherPath = path.join(dir, 'doc.bin');
  const content = rng.bytes(5 * P + 4321);
  const prefix20 = await writeStreamFile(cipherPath, content, mk, Version.V20, Cipher.CHACHA20_POLY1305);
  fs.chmodSync(cipherPath, 0o640);
  const original = fs.readFileSync(cipherPath);
  const ino20 = fs.statSync(cipherPath).ino;
  const vol = makeVolume(mk.keys, { settings: SETTINGS_V10 });
  const file = await vol.open(cipherPath, 'doc.bin');
  t.is(file.streamVersion, Version.V20);

  // Reading changes nothing.
  t.true((await file.read(0, content.length)).equals(content));
  await file.flush();
  t.true(fs.readFileSync(cipherPath).equals(original), 'reads and empty flushes leave a 2.0 file alone');

  await file.write(3 * P + 10, Buffer.from('X'));
  content[3 * P + 10] = 'X'.charCodeAt(0);
  t.is(file.streamVersion, Version.V10);
  await file.flush();
  const converted = await inspectCipherFile(cipherPath, mk, content);
  t.is(converted.version, Version.V10);
  t.false(converted.prefix.equals(prefix20), 'new prefix, so a new key');
  t.is(fs.readFileSync(cipherPath)[PREFIX_SIZE + 1], Cipher.CHACHA20_POLY1305, 'cipher kept');
  t.not(fs.statSync(cipherPath).ino, ino20, 'a new file replaced the old one');
  t.is(fs.statSync(cipherPath).mode & 0o7777, 0o640, 'mode kept');
  const moved = renamesInto(dir);
  t.is(moved.length, 1, 'one rename');
  t.is(moved[0][1], cipherPath);
  t.is(path.dirname(moved[0][0]), dir, 'temp file in the same directory');
  t.true(path.basename(moved[0][0]).startsWith(TEMP_PREFIX) && TEMP_PREFIX === '.darefs-tmp.', `temp name ${moved[0][0]}`);
  t.deepEqual(tempLeftovers(dir), [], 'no temp file left behind');
  t.deepEqual(fs.readdirSync(dir), ['doc.bin']);

  // From now on: in place, same prefix, one package.
  const before = fs.readFileSync(cipherPath);
  const inoConverted = fs.statSync(cipherPath).ino;
  await file.write(P + 5, Buffer.from('Y'));
  content[P + 5] = 'Y'.charCodeAt(0);
  await vol.release(file);
  const after = fs.readFileSync(cipherPath);
  const diff = differingBytes(before, after);
  t.true(diff.count <= MAX_PACKAGE && diff.first >= packageOffset(1) && diff.last < packageOffset(2));
  t.is(fs.statSync(cipherPath).ino, inoConverted);
  t.is(renamesInto(dir).length, 1, 'no second rename');
  await inspectCipherFile(cipherPath, mk, content);
});

test('2.0: a 2.0 file truncated as its first change is converted too', async (t) => {
  const rng = new Rng(seedFor(0x5ea10005));
  const dir = tempDir(t, 'reseal20');
  const mk = masterKeys(rng.bytes(32));
  const cipherPath = path.join(dir, 'doc.bin');
  const content = rng.bytes(3 * P + 1);
  const prefix20 = await writeStreamFile(cipherPath, content, mk, Version.V20);
  const vol = makeVolume(mk.keys, { settings: SETTINGS_V10 });
  const file = await vol.open(cipherPath, 'doc.bin');
  await file.truncate(P + 3);
  await vol.release(file);
  const info = await inspectCipherFile(cipherPath, mk, content.subarray(0, P + 3));
  t.is(info.version, Version.V10);
  t.false(info.prefix.equals(prefix20));
  t.deepEqual(tempLeftovers(dir), []);
});

test('keep-2.0 mode: every flush with changes writes a whole new 2.0 stream via a temp file', async (t) => {
  const rng = new Rng(seedFor(0x5ea10006));
  const dir = tempDir(t, 'keep20');
  const mk = masterKeys(rng.bytes(32));
  for (const settings of [SETTINGS_KEEP_V20, { ...SETTINGS_V10, newFileVersion: Version.V20, convert2to1: true }]) {
    const cipherPath = path.join(dir, `keep-${settings.convert2to1}.bin`);
    const content = rng.bytes(2 * P + 999);
    let prefix = await writeStreamFile(cipherPath, content, mk, Version.V20);
    const renamesBefore = renamesInto(dir).length;
    const vol = makeVolume(mk.keys, { settings });
    const file = await vol.open(cipherPath, 'k');
    for (let i = 0; i < 3; i++) {
      const off = rng.int(content.length - 10);
      const data = rng.bytes(10);
      await file.write(off, data);
      data.copy(content, off);
      t.is(file.streamVersion, Version.V20);
      // Not written before the flush: a 2.0 stream cannot be changed in place.
      t.true((await inspectCipherFile(cipherPath, mk)).prefix.equals(prefix));
      await file.flush();
      const info = await inspectCipherFile(cipherPath, mk, content);
      t.is(info.version, Version.V20);
      t.false(info.prefix.equals(prefix), 'new prefix on every rewrite');
      prefix = info.prefix;
    }
    await vol.release(file);
    t.is(vol.counters.rewrites, 3);
    t.is(renamesInto(dir).length - renamesBefore, 3);
    t.deepEqual(tempLeftovers(dir), []);
  }
});

test('a stream rewrite (2.0 converted, or kept 2.0) carries the exact mode and the extended attributes to the new inode', async (t) => {
  const loaded = loadSysCalls();
  if (!loaded.calls) return t.fail(`native/darefs_sys is needed: ${loaded.reason}`);
  const sys = loaded.calls;
  const rng = new Rng(seedFor(0x5ea10007));
  const dir = tempDir(t, 'xattr20');
  const mk = masterKeys(rng.bytes(32));
  for (const settings of [SETTINGS_V10, SETTINGS_KEEP_V20]) {
    const cipherPath = path.join(dir, `x-${settings.convert2to1}.bin`);
    const content = rng.bytes(P + 77);
    await writeStreamFile(cipherPath, content, mk, Version.V20);
    sys.lsetxattr(cipherPath, 'user.mime', Buffer.from('text/plain'), 0);
    sys.lsetxattr(cipherPath, 'user.empty', Buffer.alloc(0), 0);
    // Group-writable (a umask would drop it), setuid and setgid with group-exec (chown drops them).
    fs.chmodSync(cipherPath, 0o6775);
    const ino = fs.statSync(cipherPath).ino;
    const vol = makeVolume(mk.keys, { settings });
    const file = await vol.open(cipherPath, 'x');
    await file.write(5, Buffer.from('Z'));
    content[5] = 'Z'.charCodeAt(0);
    await vol.release(file);
    t.not(fs.statSync(cipherPath).ino, ino, 'rewritten into a new inode');
    await inspectCipherFile(cipherPath, mk, content);
    t.is((fs.statSync(cipherPath).mode & 0o7777).toString(8), '6775');
    t.is(sys.lgetxattr(cipherPath, 'user.mime').toString(), 'text/plain');
    t.is(sys.lgetxattr(cipherPath, 'user.empty').length, 0);
    t.deepEqual(splitNames(sys.llistxattr(cipherPath)).filter((n) => n.startsWith('user.')).sort(), ['user.empty', 'user.mime']);
  }
});

test('new files get the configured version: 1.0 re-sealed in place, 2.0 written whole', async (t) => {
  const rng = new Rng(seedFor(0x5ea10007));
  const dir = tempDir(t, 'newver');
  const mk = masterKeys(rng.bytes(32));
  for (const [settings, version] of [
    [SETTINGS_V10, Version.V10],
    [SETTINGS_KEEP_V20, Version.V20],
  ] as const) {
    const vol = makeVolume(mk.keys, { settings });
    const cipherPath = path.join(dir, `new-${version}.bin`);
    const file = await vol.create(cipherPath, 'n', 0o600);
    t.is(fs.statSync(cipherPath).size, PREFIX_SIZE, 'an empty file is the prefix alone');
    const data = rng.bytes(P + 17);
    await file.write(0, data);
    await vol.release(file);
    const info = await inspectCipherFile(cipherPath, mk, data);
    t.is(info.version, version);
    t.deepEqual(tempLeftovers(dir), []);
  }
});
