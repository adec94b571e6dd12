/**
 * Volume: one CipherFile per cipher path, shared by every handle, so two handles see one file
 * before any flush; the last release flushes and closes; renames and unlinks keep open objects.
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MAX_PAYLOAD, PREFIX_SIZE, Version } from '../src/dare';
import { ClosedFileError } from '../src/store';
import { Rng, SETTINGS_V10, inspectCipherFile, makeVolume, masterKeys, seedFor, tempDir, tempLeftovers, writeStreamFile } from './helpers/store';

const P = MAX_PAYLOAD;

test('two handles on one path share one object: a write through one is read through the other before any flush', async (t) => {
  const rng = new Rng(seedFor(0x401e0001));
  const dir = tempDir(t, 'vol');
  const mk = masterKeys(rng.bytes(32));
  const cipherPath = path.join(dir, 'shared.bin');
  const content = rng.bytes(3 * P + 10);
  await writeStreamFile(cipherPath, content, mk, Version.V10);
  const onDisk = fs.readFileSync(cipherPath);

  const vol = makeVolume(mk.keys);
  const a = await vol.open(cipherPath, 'shared.bin');
  const b = await vol.open(cipherPath, 'shared.bin');
  t.is(a, b, 'one object');
  t.is(a.refs, 2);
  t.is(vol.openFiles, 1);
  t.is(vol.find(cipherPath), a);

  const data = rng.bytes(5000);
  await a.write(P - 100, data);
  data.copy(content, P - 100);
  t.true((await b.read(P - 200, 6000)).equals(content.subarray(P - 200, P + 5800)), 'b sees a’s write');
  t.true(fs.readFileSync(cipherPath).equals(onDisk), 'nothing written yet: the write is still in memory');

  await b.truncate(2 * P + 5);
  t.is(a.size, 2 * P + 5);
  const grow = rng.bytes(100);
  await b.write(4 * P, grow); // past EOF: a gap of zeros
  const expected = Buffer.alloc(4 * P + 100);
  content.copy(expected, 0, 0, 2 * P + 5);
  grow.copy(expected, 4 * P);
  t.true((await a.read(0, 10 * P)).equals(expected));

  await vol.release(a);
  t.is(vol.openFiles, 1, 'still open through b');
  t.true((await b.read(0, 10 * P)).equals(expected), 'b still works after a is released');
  await vol.release(b);
  t.is(vol.openFiles, 0);
  await t.throwsAsync(b.read(0, 1), { instanceOf: ClosedFileError });
  await inspectCipherFile(cipherPath, mk, expected);
});

test('concurrent opens of one path share one object and derive its key once', async (t) => {
  const rng = new Rng(seedFor(0x401e0002));
  const dir = tempDir(t, 'vol');
  const mk = masterKeys(rng.bytes(32));
  const cipherPath = path.join(dir, 'c.bin');
  const content = rng.bytes(P + 1);
  await writeStreamFile(cipherPath, content, mk, Version.V10);
  const vol = makeVolume(mk.keys);
  const handles = await Promise.all([1, 2, 3, 4].map(() => vol.open(cipherPath, 'c.bin')));
  t.true(handles.every((h) => h === handles[0]));
  t.is(handles[0].refs, 4);
  t.is(mk.calls, 1);
  await Promise.all(handles.map((h, i) => h.write(i * 1000, Buffer.from([i]))));
  for (const h of handles) await vol.release(h);
  for (let i = 0; i < 4; i++) content[i * 1000] = i;
  await inspectCipherFile(cipherPath, mk, content);
});

test('create shares with a later open; the last release flushes; reopening while closing sees the data', async (t) => {
  const rng = new Rng(seedFor(0x401e0003));
  const dir = tempDir(t, 'vol');
  const mk = masterKeys(rng.bytes(32));
  const cipherPath = path.join(dir, 'n.bin');
  const vol = makeVolume(mk.keys);
  const created = await vol.create(cipherPath, 'n.bin', 0o600);
  const opened = await vol.open(cipherPath, 'n.bin');
  t.is(created, opened);
  const data = rng.bytes(2 * P + 3);
  await opened.write(0, data);
  await vol.release(created);
  t.is(fs.statSync(cipherPath).size, PREFIX_SIZE, 'still in memory while a handle is open');
  const closing = vol.release(opened);
  const again = await vol.open(cipherPath, 'n.bin'); // must wait for the close, then see its data
  await closing;
  t.not(again, opened, 'a new object after the last close');
  t.true((await again.read(0, data.length + 1)).equals(data));
  await vol.release(again);
  await inspectCipherFile(cipherPath, mk, data);
  await t.throwsAsync(vol.create(cipherPath, 'n.bin', 0o600), { code: 'EEXIST' });
});

test('withFile opens for one call and releases; flushAll flushes every open file', async (t) => {
  const rng = new Rng(seedFor(0x401e0004));
  const dir = tempDir(t, 'vol');
  const mk = masterKeys(rng.bytes(32));
  const vol = makeVolume(mk.keys);
  const paths = [0, 1, 2].map((i) => path.join(dir, `f${i}.bin`));
  const files = await Promise.all(paths.map((p, i) => vol.create(p, `f${i}`, 0o644)));
  const datas = files.map(() => rng.bytes(P + rng.int(P)));
  await Promise.all(files.map((f, i) => f.write(0, datas[i])));
  await vol.flushAll();
  for (let i = 0; i < 3; i++) await inspectCipherFile(paths[i], mk, datas[i]);
  const got = await vol.withFile(paths[1], 'f1', (f) => f.read(0, 10));
  t.true(got.equals(datas[1].subarray(0, 10)));
  t.is(files[1].refs, 1, 'withFile released its handle');
  for (const f of files) await vol.release(f);
  t.is(vol.openFiles, 0);
});

test('an open file keeps working after a rename, and its changes land at the new name', async (t) => {
  const rng = new Rng(seedFor(0x401e0005));
  const dir = tempDir(t, 'vol');
  const mk = masterKeys(rng.bytes(32));
  fs.mkdirSync(path.join(dir, 'a'));
  const from = path.join(dir, 'a', 'x.bin');
  const to = path.join(dir, 'b.bin');
  const content = rng.bytes(P + 100);
  await writeStreamFile(from, content, mk, Version.V20); // 2.0: the conversion must rename over the NEW name
  const vol = makeVolume(mk.keys, { settings: SETTINGS_V10 });
  const file = await vol.open(from, 'a/x.bin');
  fs.renameSync(from, to);
  vol.renamed(from, to, (p) => path.relative(dir, p));
  t.is(file.cipherPath, to);
  t.is(file.name, 'b.bin');
  t.is(await vol.open(to, 'b.bin'), file);
  await vol.release(file);
  await file.write(5, Buffer.from('renamed'));
  Buffer.from('renamed').copy(content, 5);
  await vol.release(file);
  t.false(fs.existsSync(from), 'nothing recreated at the old name');
  await inspectCipherFile(to, mk, content);
  t.deepEqual(tempLeftovers(dir), []);
});

test('an unlinked open file stays usable and is never recreated at its old name', async (t) => {
  const rng = new Rng(seedFor(0x401e0006));
  const dir = tempDir(t, 'vol');
  const mk = masterKeys(rng.bytes(32));
  for (const version of [Version.V10, Version.V20]) {
    const cipherPath = path.join(dir, `gone${version}.bin`);
    const content = rng.bytes(2 * P);
    await writeStreamFile(cipherPath, content, mk, version);
    const vol = makeVolume(mk.keys, { settings: SETTINGS_V10 });
    const file = await vol.open(cipherPath, 'gone');
    fs.unlinkSync(cipherPath);
    vol.unlinked(cipherPath);
    t.is(vol.find(cipherPath), undefined);
    await file.write(P - 1, Buffer.from('ab')); // 2.0: converts, which must not rename over the name
    Buffer.from('ab').copy(content, P - 1);
    await file.flush();
    t.false(fs.existsSync(cipherPath), `version 0x${version.toString(16)}: not recreated`);
    t.true((await file.read(0, 3 * P)).equals(content));
    // A new file at the same name is a different object.
    const fresh = await vol.create(cipherPath, 'gone', 0o600);
    t.not(fresh, file);
    t.is(fresh.size, 0);
    await vol.release(fresh);
    await vol.release(file);
    t.is(fs.statSync(cipherPath).size, PREFIX_SIZE);
    t.deepEqual(tempLeftovers(dir), []);
  }
});

test('a renamed-over target lives on, nameless, until closed', async (t) => {
  const rng = new Rng(seedFor(0x401e0007));
  const dir = tempDir(t, 'vol');
  const mk = masterKeys(rng.bytes(32));
  const src = path.join(dir, 'src.bin');
  const dst = path.join(dir, 'dst.bin');
  const srcData = rng.bytes(1000);
  const dstData = rng.bytes(2000);
  await writeStreamFile(src, srcData, mk, Version.V10);
  await writeStreamFile(dst, dstData, mk, Version.V20);
  const vol = makeVolume(mk.keys, { settings: SETTINGS_V10 });
  const old = await vol.open(dst, 'dst.bin');
  fs.renameSync(src, dst);
  vol.renamed(src, dst, (p) => path.basename(p));
  t.true(old.unlinked);
  const now = await vol.open(dst, 'dst.bin');
  t.not(now, old);
  t.true((await now.read(0, 5000)).equals(srcData));
  await old.write(0, Buffer.from('zz')); // converts the nameless 2.0 file: must not clobber dst
  await vol.release(old);
  await vol.release(now);
  await inspectCipherFile(dst, mk, srcData);
  t.deepEqual(tempLeftovers(dir), []);
});

test('the dirty budget is volume-wide and bounds unsealed data; closed files leave nothing in the package cache', async (t) => {
  const rng = new Rng(seedFor(0x401e0008));
  const dir = tempDir(t, 'vol');
  const mk = masterKeys(rng.bytes(32));
  const vol = makeVolume(mk.keys, { dirtyBytes: 3 * P });
  const files = await Promise.all([0, 1].map((i) => vol.create(path.join(dir, `d${i}.bin`), `d${i}`, 0o600)));
  const models = [Buffer.alloc(0), Buffer.alloc(0)];
  let maxDirty = 0;
  let sawDirty = false;
  for (let i = 0; i < 400; i++) {
    const k = rng.int(2);
    const f = files[k];
    const data = rng.bytes(rng.range(1, 3000));
    const off = rng.int(Math.max(1, models[k].length + 20 * 1024));
    await f.write(off, data);
    const grown = Buffer.alloc(Math.max(models[k].length, off + data.length));
    models[k].copy(grown);
    data.copy(grown, off);
    models[k] = grown;
    const dirty = files[0].dirtyPackages + files[1].dirtyPackages;
    maxDirty = Math.max(maxDirty, dirty);
    if (dirty > 0) sawDirty = true;
    // 3 packages of budget, plus what one small write (with its zero gap) can add before sealing
    t.true(dirty <= 3 + 2, `step ${i}: ${dirty} dirty packages`);
  }
  t.true(sawDirty, 'small writes do stay in memory under the budget');
  t.log(`at most ${maxDirty} dirty packages`);
  // a large zero-filling truncate seals as it goes
  await files[0].truncate(models[0].length + 40 * P);
  t.true(files[0].dirtyPackages <= 4, `${files[0].dirtyPackages} dirty after growing by 40 packages`);
  models[0] = Buffer.concat([models[0], Buffer.alloc(40 * P)]);
  for (const f of files) await vol.release(f);
  t.is(vol.cache.stats.bytes, 0, 'no plaintext of closed files stays cached');
  for (let k = 0; k < 2; k++) await inspectCipherFile(path.join(dir, `d${k}.bin`), mk, models[k]);
});

test('closed files leave no bookkeeping behind in the volume (no growth per path ever opened)', async (t) => {
  const rng = new Rng(seedFor(0x401e0009));
  const dir = tempDir(t, 'vol');
  const mk = masterKeys(rng.bytes(32));
  const vol = makeVolume(mk.keys);
  for (let i = 0; i < 20; i++) {
    const p = path.join(dir, `t${i}.bin`);
    const f = await vol.create(p, `t${i}`, 0o600);
    await f.write(0, rng.bytes(100));
    await vol.release(f);
    await vol.withFile(p, `t${i}`, (g) => g.read(0, 10));
  }
  await new Promise((resolve) => setImmediate(resolve));
  // Internals, on purpose: a leak here only shows as memory growth over a long mount.
  const internals = vol as unknown as { files: Map<string, unknown>; opening: Map<string, unknown>; closing: Map<string, unknown> };
  t.is(internals.files.size, 0);
  t.is(internals.opening.size, 0);
  t.is(internals.closing.size, 0, 'closing entries are dropped once the close is done');
});
