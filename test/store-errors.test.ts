/**
 * Errors of the store: tampered packages fail alone, with a typed error naming file and package;
 * invalid cipher sizes fail the open with a typed error; a read-only volume refuses changes.
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  AuthenticationError,
  DareError,
  HEADER_SIZE,
  InvalidLengthError,
  MAX_PACKAGE,
  MAX_PAYLOAD,
  NonceMismatchError,
  PREFIX_SIZE,
  SequenceMismatchError,
  Version,
  packageOffset,
} from '../src/dare';
import { ReadOnlyError, ShortCipherFileError } from '../src/store';
import { Rng, SETTINGS_V10, inspectCipherFile, makeVolume, masterKeys, seedFor, tempDir, writeStreamFile } from './helpers/store';

const P = MAX_PAYLOAD;

function flipByte(file: string, offset: number, mask = 0x40): void {
  const fd = fs.openSync(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, offset);
    b[0] ^= mask;
    fs.writeSync(fd, b, 0, 1, offset);
  } finally {
    fs.closeSync(fd);
  }
}

for (const cacheBytes of [16 << 20, 0]) {
  for (const version of [Version.V10, Version.V20]) {
    test(`tampered package 1 (v${version === Version.V10 ? '1.0' : '2.0'}, cache ${cacheBytes}): its range fails with AuthenticationError naming file and package; packages 0 and 2 still read`, async (t) => {
      const rng = new Rng(seedFor(0xe4404001));
      const dir = tempDir(t, 'tamper');
      const mk = masterKeys(rng.bytes(32));
      const cipherPath = path.join(dir, 'victim.bin');
      const content = rng.bytes(3 * P + 500);
      await writeStreamFile(cipherPath, content, mk, version);
      flipByte(cipherPath, packageOffset(1) + HEADER_SIZE + 1234); // ciphertext of package 1

      const vol = makeVolume(mk.keys, { packageCacheBytes: cacheBytes, settings: SETTINGS_V10, readOnly: version === Version.V20 });
      const file = await vol.open(cipherPath, 'dir/victim.txt');
      for (const [off, len] of [
        [P + 10, 20],
        [0, 2 * P], // spans 0 and 1
        [P - 1, 2], // one byte on each side
        [2 * P - 1, 10], // spans 1 and 2
      ]) {
        const err = await t.throwsAsync(file.read(off, len), { instanceOf: AuthenticationError }, `read(${off}, ${len})`);
        t.true(err instanceof DareError);
        t.is(err?.packageIndex, 1);
        t.is(err?.file, 'dir/victim.txt');
        t.regex(err?.message ?? '', /package 1 of dir\/victim\.txt/);
      }
      t.true((await file.read(0, P)).equals(content.subarray(0, P)), 'package 0 reads');
      t.true((await file.read(2 * P, 2 * P)).equals(content.subarray(2 * P)), 'packages 2 and 3 read');
      t.true((await file.read(P - 5, 5)).equals(content.subarray(P - 5, P)));
      t.true(vol.counters.authFailures >= 4);
      // Still failing the second time: nothing unauthenticated was cached.
      await t.throwsAsync(file.read(P, 1), { instanceOf: AuthenticationError });
      if (version === Version.V10) {
        // A partial write into the bad package needs its plaintext: refused, nothing changes.
        await t.throwsAsync(file.write(P + 3, Buffer.from('x')), { instanceOf: AuthenticationError });
        await t.throwsAsync(file.read(P, 1), { instanceOf: AuthenticationError });
        t.is(file.size, content.length);
      }
      await vol.release(file);
    });
  }
}

test('tampered headers are refused at open (package 0, last) or at read (middle), with the right error kind', async (t) => {
  const rng = new Rng(seedFor(0xe4404002));
  const dir = tempDir(t, 'tamper-h');
  const mk = masterKeys(rng.bytes(32));
  const vol = makeVolume(mk.keys);

  // 1.0: sequence number of package 2 changed → read of package 2 fails, package 1 fine.
  const f10 = path.join(dir, 'seq.bin');
  const c10 = rng.bytes(4 * P);
  await writeStreamFile(f10, c10, mk, Version.V10);
  flipByte(f10, packageOffset(2) + 4);
  const a = await vol.open(f10, 'seq');
  const e1 = await t.throwsAsync(a.read(2 * P, 10), { instanceOf: SequenceMismatchError });
  t.is(e1?.packageIndex, 2);
  t.true((await a.read(P, P)).equals(c10.subarray(P, 2 * P)));
  await vol.release(a);

  // 2.0: the nonce of package 1 changed → NonceMismatchError on read.
  const f20 = path.join(dir, 'nonce.bin');
  const c20 = rng.bytes(3 * P + 1);
  await writeStreamFile(f20, c20, mk, Version.V20);
  flipByte(f20, packageOffset(1) + 9);
  const ro = makeVolume(mk.keys, { readOnly: true });
  const b = await ro.open(f20, 'nonce');
  const e2 = await t.throwsAsync(b.read(P, 10), { instanceOf: NonceMismatchError });
  t.is(e2?.file, 'nonce');
  t.true((await b.read(2 * P, P + 1)).equals(c20.subarray(2 * P)));
  await ro.release(b);

  // 2.0: last package's final flag cleared → the open fails (checked against the size).
  const fl = path.join(dir, 'final.bin');
  await writeStreamFile(fl, rng.bytes(2 * P + 7), mk, Version.V20);
  flipByte(fl, packageOffset(2) + 4, 0x80); // the final flag
  const e3: unknown = await ro.open(fl, 'final').then(
    () => undefined,
    (err: unknown) => err,
  );
  t.true(e3 instanceof DareError, String(e3));
  if (e3 instanceof DareError) {
    t.is(e3.file, 'final');
    t.true(e3.packageIndex >= 2, `package ${e3.packageIndex}`);
  }
  t.is(ro.openFiles, 0);
});

test('invalid cipher sizes fail Volume.open with a typed DareError naming the file', async (t) => {
  const rng = new Rng(seedFor(0xe4404003));
  const dir = tempDir(t, 'badlen');
  const mk = masterKeys(rng.bytes(32));
  const vol = makeVolume(mk.keys);
  const good = path.join(dir, 'good.bin');
  await writeStreamFile(good, rng.bytes(P + 100), mk, Version.V10);
  const whole = fs.readFileSync(good);
  // Shorter than a prefix: no content, named, and fsck --repair makes it empty.
  for (const size of [1, 31]) {
    const p = path.join(dir, `short-${size}.bin`);
    fs.writeFileSync(p, whole.subarray(0, size));
    const err = await t.throwsAsync(vol.open(p, `short ${size}`), { instanceOf: ShortCipherFileError });
    t.regex(err!.message, new RegExp(`^short ${size}: the cipher file is ${size} bytes?, shorter than its 32-byte prefix`));
    t.is(vol.openFiles, 0);
  }
  // 0 bytes: an empty file whose prefix a crash lost.
  const zero = path.join(dir, 'zero.bin');
  fs.writeFileSync(zero, '');
  const z = await vol.open(zero, 'zero');
  t.is(z.size, 0);
  await vol.release(z);
  const cases: Array<[string, number, new (...args: never[]) => DareError]> = [
    ['prefix + 1', PREFIX_SIZE + 1, InvalidLengthError],
    ['prefix + 32', PREFIX_SIZE + 32, InvalidLengthError],
    ['one package + 1', PREFIX_SIZE + MAX_PACKAGE + 1, InvalidLengthError],
    ['one package + 32', PREFIX_SIZE + MAX_PACKAGE + 32, InvalidLengthError],
  ];
  for (const [label, size, kind] of cases) {
    const p = path.join(dir, `bad-${size}.bin`);
    fs.writeFileSync(p, size <= whole.length ? whole.subarray(0, size) : Buffer.concat([whole, Buffer.alloc(size - whole.length)]));
    const err = await t.throwsAsync(vol.open(p, `bad ${label}`), { instanceOf: kind }, label);
    t.true(err instanceof DareError, label);
    t.is(err?.file, `bad ${label}`, label);
    t.true(err?.message.includes(`bad ${label}`), label);
    t.is(vol.openFiles, 0, `${label}: not left in the open-file table`);
  }
  // a file of exactly the prefix is a valid empty file
  const empty = path.join(dir, 'empty.bin');
  fs.writeFileSync(empty, whole.subarray(0, PREFIX_SIZE));
  const f = await vol.open(empty, 'empty');
  t.is(f.size, 0);
  t.is((await f.read(0, 100)).length, 0);
  await vol.release(f);
  // A failed open does not poison the path: fix the file, open again.
  const p = path.join(dir, `bad-${PREFIX_SIZE + 1}.bin`);
  fs.writeFileSync(p, whole);
  const fixed = await vol.open(p, 'fixed');
  t.is(fixed.size, P + 100);
  await vol.release(fixed);
});

test('read-only volume: write, truncate and create reject with ReadOnlyError; reads work; nothing changes on disk', async (t) => {
  const rng = new Rng(seedFor(0xe4404004));
  const dir = tempDir(t, 'ro');
  const mk = masterKeys(rng.bytes(32));
  for (const version of [Version.V10, Version.V20]) {
    const cipherPath = path.join(dir, `ro${version}.bin`);
    const content = rng.bytes(2 * P + 3);
    await writeStreamFile(cipherPath, content, mk, version);
    const before = fs.readFileSync(cipherPath);
    const vol = makeVolume(mk.keys, { readOnly: true, settings: SETTINGS_V10 });
    t.true(vol.readOnly);
    const file = await vol.open(cipherPath, 'ro');
    await t.throwsAsync(file.write(0, Buffer.from('x')), { instanceOf: ReadOnlyError });
    await t.throwsAsync(file.write(file.size + 10, Buffer.from('x')), { instanceOf: ReadOnlyError });
    await t.throwsAsync(file.truncate(0), { instanceOf: ReadOnlyError });
    await t.throwsAsync(file.truncate(10 * P), { instanceOf: ReadOnlyError });
    t.is(file.size, content.length);
    t.true((await file.read(0, 3 * P)).equals(content));
    await file.flush('full');
    await vol.release(file);
    t.true(fs.readFileSync(cipherPath).equals(before), 'untouched');
    await t.throwsAsync(vol.create(path.join(dir, 'new.bin'), 'new', 0o600), { instanceOf: ReadOnlyError });
    t.false(fs.existsSync(path.join(dir, 'new.bin')));
    await inspectCipherFile(cipherPath, mk, content);
  }
});

test('a cipher file the process may not write opens read-only and refuses changes with EACCES', async (t) => {
  const rng = new Rng(seedFor(0xe4404005));
  const dir = tempDir(t, 'eacces');
  const mk = masterKeys(rng.bytes(32));
  const cipherPath = path.join(dir, 'locked.bin');
  const content = rng.bytes(100);
  await writeStreamFile(cipherPath, content, mk, Version.V10);
  fs.chmodSync(cipherPath, 0o444);
  const vol = makeVolume(mk.keys);
  let file;
  try {
    // root ignores modes; make the open fail the way it does for other users
    const real = vol.dir.openFile.bind(vol.dir);
    vol.dir.openFile = (p: string, flags: number, mode?: number): number => {
      if (p === cipherPath && (flags & 3) === fs.constants.O_RDWR) throw Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' });
      return real(p, flags, mode);
    };
    try {
      file = await vol.open(cipherPath, 'locked');
    } finally {
      vol.dir.openFile = real;
    }
  } catch (err) {
    t.fail(String(err));
    return;
  }
  t.true((await file.read(0, 200)).equals(content));
  await t.throwsAsync(file.write(0, Buffer.from('x')), { code: 'EACCES' });
  await t.throwsAsync(file.truncate(1), { code: 'EACCES' });
  await vol.release(file);
});

test('closed files refuse reads; flush and close after close are no-ops', async (t) => {
  const rng = new Rng(seedFor(0xe4404006));
  const dir = tempDir(t, 'closed');
  const mk = masterKeys(rng.bytes(32));
  const vol = makeVolume(mk.keys);
  const file = await vol.create(path.join(dir, 'c.bin'), 'c', 0o600);
  await file.write(0, Buffer.from('hello'));
  await vol.release(file);
  await t.throwsAsync(file.read(0, 1), { message: /c: file already closed/ });
  await t.throwsAsync(file.write(0, Buffer.from('x')), { message: /already closed/ });
  await t.notThrowsAsync(file.flush());
  await t.notThrowsAsync(file.close());
});
