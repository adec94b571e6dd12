/**
 * Durability corner cases of the store (issue 12): a 0-byte cipher file is an empty file, one of
 * 1 to 31 bytes is named and repaired to empty, the replay reports every record it skips (also
 * the harmless ones) and a torn retire mark is reported as what it is.
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { MAX_PAYLOAD, PREFIX_SIZE, cipherSize } from '../src/dare';
import { journalKey } from '../src/keys';
import { ShortCipherFileError, SimulatedCrash, Volume, checkTree, describeRecovery, setFaultHook } from '../src/store';
import * as io from '../src/store/io';
import { PowerCut } from './helpers/power-cut';
import { MasterKeys, Rng, SETTINGS_V10, masterKeys, seedFor, tempDir } from './helpers/store';

const P = MAX_PAYLOAD;

test.afterEach.always(() => setFaultHook(null));

function volume(dir: string, mk: MasterKeys, master = true, journal = true): Volume {
  return new Volume({
    journal,
    keys: mk.keys,
    settings: SETTINGS_V10,
    readOnly: false,
    packageCacheBytes: 4 * P,
    dirtyBytes: 64 * P,
    cipherDir: dir,
    journalKey: master ? journalKey(mk.masterKey) : undefined,
  });
}

async function readAll(vol: Volume, dir: string, name: string): Promise<Buffer> {
  const f = await vol.open(path.join(dir, name), name);
  try {
    return await f.read(0, f.size + 1);
  } finally {
    await vol.release(f);
  }
}

test.serial('a 0-byte cipher file is an empty file: it opens with size 0, reads nothing, and its first write gives it a prefix', async (t) => {
  const dir = tempDir(t, 'zero');
  const mk = masterKeys(new Rng(seedFor(0xd0a1)).bytes(32));
  fs.writeFileSync(path.join(dir, 'zero.bin'), '');
  const vol = volume(dir, mk);
  const f = await vol.open(path.join(dir, 'zero.bin'), 'zero.bin');
  t.is(f.size, 0);
  t.is((await f.read(0, 100)).length, 0);
  await f.flush('data');
  t.is(fs.statSync(path.join(dir, 'zero.bin')).size, 0, 'a flush with nothing to write writes no prefix');
  const data = new Rng(1).bytes(P + 10);
  await f.write(0, data);
  await vol.release(f);
  t.true((await readAll(vol, dir, 'zero.bin')).equals(data));
  vol.checkpoint();
  t.is(fs.statSync(path.join(dir, 'zero.bin')).size, cipherSize(data.length));
  t.true((await readAll(vol, dir, 'zero.bin')).equals(data));
  vol.close();
  const report = await checkTree({ root: dir, key: mk.keys.key });
  t.deepEqual(report.files.map((x) => [x.path, x.status]), [['zero.bin', 'ok']]);
});

test.serial('a cipher file of 1 to 31 bytes: open names it and says what to do; fsck calls it short, --repair makes it empty', async (t) => {
  const dir = tempDir(t, 'short');
  const mk = masterKeys(new Rng(seedFor(0xd0a2)).bytes(32));
  fs.writeFileSync(path.join(dir, 'short.bin'), Buffer.alloc(17, 7));
  fs.writeFileSync(path.join(dir, 'zero.bin'), '');
  const vol = volume(dir, mk);
  const err = await t.throwsAsync(vol.open(path.join(dir, 'short.bin'), 'short.bin'), { instanceOf: ShortCipherFileError });
  t.regex(err!.message, /^short\.bin: the cipher file is 17 bytes, shorter than its 32-byte prefix.*darefs fsck --repair makes it an empty file/);
  vol.close();

  const look = await checkTree({ root: dir, key: mk.keys.key });
  t.deepEqual(look.files.map((x) => [x.path, x.status]), [['short.bin', 'short'], ['zero.bin', 'empty']]);
  t.regex(look.files[0].message!, /17 bytes, shorter than the 32-byte prefix: it holds no content.*--repair makes it an empty file/);
  t.is(look.counts.bad, 1, 'a 0-byte file is not a problem; a short one is');
  t.is(fs.statSync(path.join(dir, 'short.bin')).size, 17, 'untouched without --repair');

  const repaired = await checkTree({ root: dir, key: mk.keys.key, removeTemp: true });
  t.deepEqual(repaired.files.map((x) => [x.path, x.status, x.repaired === true]), [['short.bin', 'empty', true], ['zero.bin', 'empty', false]]);
  t.is(repaired.counts.bad, 0);
  t.is(fs.statSync(path.join(dir, 'short.bin')).size, 0);
  const again = volume(dir, mk);
  t.is((await readAll(again, dir, 'short.bin')).length, 0, 'reads as an empty file');
  again.close();
});

/** A file with one sealed package, fsync'ed, then rewritten in place under a journal batch. */
async function journaledRewrite(dir: string, mk: MasterKeys, crashAt: (op: { kind: string; path?: string }) => boolean): Promise<{ before: Buffer; after: Buffer }> {
  const file = path.join(dir, 'f.bin');
  const before = new Rng(2).bytes(P + 100);
  let vol = volume(dir, mk);
  let f = await vol.create(file, 'f.bin', 0o600);
  await f.write(0, before);
  await f.flush('full');
  await vol.release(f);
  vol.close();
  const after = Buffer.from(before);
  after.fill(9, 10, 20);
  vol = volume(dir, mk);
  f = await vol.open(file, 'f.bin');
  await f.write(10, after.subarray(10, 20));
  await f.flush('none');
  // The checkpoint writes the journal's packages in place, syncs and retires.
  setFaultHook((op) => (crashAt(op) ? 'half' : 'ok'));
  try {
    vol.checkpoint();
  } catch (err) {
    if (!(err instanceof SimulatedCrash)) throw err;
  } finally {
    await f.close().catch(() => undefined);
    vol.close();
    setFaultHook(null);
  }
  return { before, after };
}

test.serial('a crash that tears the retire mark (after the batch was written in place and synced) is reported as that: nothing lost', async (t) => {
  const dir = tempDir(t, 'retire-tear');
  const mk = masterKeys(new Rng(seedFor(0xd0a3)).bytes(32));
  const journalFile = path.join(dir, '.darefs', 'journal');
  // The retire is the journal write of 8 bytes at offset 0.
  const { after } = await journaledRewrite(dir, mk, (op) => op.kind === 'write' && op.path === journalFile);
  const torn = fs.readFileSync(journalFile).subarray(0, 8);
  t.false(torn.equals(Buffer.alloc(8)), 'the mark is half written');
  const vol = volume(dir, mk);
  const r = (await vol.recover())!;
  t.like(r, { discarded: true, benign: true, packages: 0 });
  t.regex(r.reason!, /retire mark was torn by the crash: the batch had been written in place and synced before.*nothing was lost/);
  t.deepEqual(describeRecovery({ replayed: r }).map((l) => l.problem), [false], 'a line, not a warning');
  t.true((await readAll(vol, dir, 'f.bin')).equals(after));
  vol.close();
});

test.serial('the replay reports every record it skips: a file removed since, and a file replaced by another stream since', async (t) => {
  for (const change of ['removed', 'replaced'] as const) {
    const dir = tempDir(t, `skip-${change}`);
    const mk = masterKeys(new Rng(seedFor(0xd0a4)).bytes(32));
    const file = path.join(dir, 'f.bin');
    // A crash right after the commit (at the in-place write): the batch stays.
    await journaledRewrite(dir, mk, (op) => op.kind === 'writev' && op.path === file);
    if (change === 'removed') fs.rmSync(file);
    else {
      // Another stream at the same name (a rename over it), written without touching the journal.
      fs.rmSync(file);
      const other = volume(dir, mk, true, false);
      const f = await other.create(file, 'f.bin', 0o600);
      await f.write(0, Buffer.from('another file'));
      await other.release(f);
      other.close();
    }
    const vol = volume(dir, mk);
    const r = (await vol.recover())!;
    t.is(r.skipped.length, 1, change);
    t.like(r.skipped[0], { path: 'f.bin', benign: true });
    t.regex(r.skipped[0].reason, change === 'removed' ? /the file is gone/ : /another stream \(another prefix\)/);
    const lines = describeRecovery({ replayed: r });
    t.true(lines.some((l) => /journal record for "f\.bin" skipped/.test(l.text) && !l.problem), JSON.stringify(lines));
    if (change === 'replaced') t.is((await readAll(vol, dir, 'f.bin')).toString(), 'another file', 'the new file is untouched');
    vol.close();
  }
});

test.serial("a 0-byte (or torn-prefix) file whose journal record is there gets the record's prefix at replay", async (t) => {
  for (const left of [0, 13]) {
    const dir = tempDir(t, `prefix-${left}`);
    const mk = masterKeys(new Rng(seedFor(0xd0a5)).bytes(32));
    const file = path.join(dir, 'new.bin');
    fs.writeFileSync(file, '');
    const data = new Rng(3).bytes(2 * P + 5);
    let vol = volume(dir, mk);
    const f = await vol.open(file, 'new.bin');
    await f.write(0, data);
    await f.flush('none');
    // A crash at the checkpoint's in-place write, after the journal sync; then, as a power cut
    // may leave it, the prefix (never synced) lost or torn.
    setFaultHook((op) => (op.kind === 'writev' && op.path === file ? 'crash' : 'ok'));
    t.throws(() => vol.checkpoint(), { instanceOf: SimulatedCrash });
    await f.close().catch(() => undefined);
    vol.close();
    setFaultHook(null);
    const prefix = fs.readFileSync(file).subarray(0, PREFIX_SIZE);
    fs.writeFileSync(file, prefix.subarray(0, left));
    vol = volume(dir, mk);
    const r = (await vol.recover())!;
    t.deepEqual(r.skipped, [], `${left} bytes left`);
    t.deepEqual(r.files, ['new.bin']);
    t.true(fs.readFileSync(file).subarray(0, PREFIX_SIZE).equals(prefix));
    t.true((await readAll(vol, dir, 'new.bin')).equals(data), 'the journal held every package');
    vol.close();
    const report = await checkTree({ root: dir, key: mk.keys.key });
    t.deepEqual(report.files.map((x) => x.status), ['ok']);
  }
});

// ---- group commit ----

/** A volume whose checkpoints run only when asked (no timer), as the tests below need. */
function manualVolume(dir: string, mk: MasterKeys, dirtyBytes = 64 * P): Volume {
  return new Volume({ keys: mk.keys, settings: SETTINGS_V10, readOnly: false, packageCacheBytes: 4 * P, dirtyBytes, cipherDir: dir, journalKey: journalKey(mk.masterKey), commitInterval: 0 });
}

test.serial('a close syncs nothing; one checkpoint syncs the journal once for every file, then each file, and retires; a killed daemon loses nothing', async (t) => {
  const dir = tempDir(t, 'group');
  const mk = masterKeys(new Rng(seedFor(0xd0a6)).bytes(32));
  const rng = new Rng(4);
  const contents = new Map<string, Buffer>();
  const syncs: string[] = [];
  const journalFile = path.join(dir, '.darefs', 'journal');
  setFaultHook((op) => {
    if (op.kind === 'fsync' || op.kind === 'fdatasync') syncs.push(op.path === journalFile ? 'journal' : path.basename(op.path ?? '?'));
    return 'ok';
  });
  const vol = manualVolume(dir, mk);
  for (let i = 0; i < 20; i++) {
    const name = `f${i}.bin`;
    const data = rng.bytes(rng.range(1, 3 * P));
    contents.set(name, data);
    const f = await vol.create(path.join(dir, name), name, 0o600);
    await f.write(0, data);
    await vol.release(f);
  }
  // Only the root and .darefs, when .darefs is made for the journal (once).
  t.deepEqual(syncs.filter((s) => s !== '.darefs' && s !== ''), [], 'no sync for 20 creates, writes and closes');
  // Reads (a reopen) see what the journal holds.
  for (const [name, data] of contents) t.true((await readAll(vol, dir, name)).equals(data), name);

  // The daemon killed here (the page cache survives): the next mount's replay has everything.
  dies(vol);
  const killed = manualVolume(dir, mk);
  const r = (await killed.recover())!;
  t.deepEqual(r.skipped, []);
  t.is(r.files.length, 20);
  for (const [name, data] of contents) t.true((await readAll(killed, dir, name)).equals(data), `${name} after the replay`);
  killed.close();
  setFaultHook(null);
});

test.serial('a checkpoint: one journal sync for all files, a sync per file, the journal retired', async (t) => {
  const dir = tempDir(t, 'checkpoint');
  const mk = masterKeys(new Rng(seedFor(0xd0a7)).bytes(32));
  const syncs: string[] = [];
  const journalFile = path.join(dir, '.darefs', 'journal');
  const vol = manualVolume(dir, mk);
  const names = ['a.bin', 'b.bin', 'c.bin'];
  for (const name of names) {
    const f = await vol.create(path.join(dir, name), name, 0o600);
    await f.write(0, Buffer.alloc(P + 7, name.charCodeAt(0)));
    await vol.release(f);
  }
  setFaultHook((op) => {
    if (op.kind === 'fsync' || op.kind === 'fdatasync') syncs.push(op.path === journalFile ? 'journal' : path.basename(op.path ?? '?'));
    return 'ok';
  });
  vol.checkpoint();
  setFaultHook(null);
  t.deepEqual(syncs, ['journal', ...names]);
  t.deepEqual(vol.inspectJournal(), { packages: 0, files: [], torn: false });
  for (const name of names) t.is(fs.statSync(path.join(dir, name)).size, cipherSize(P + 7));
  vol.close();
});

test.serial('write, close, rename over an existing file: after a power cut at any point, the name holds the old or the new content, whole', async (t) => {
  const rng = new Rng(seedFor(0xd0a8));
  const mk = masterKeys(rng.bytes(32));
  const base = tempDir(t, 'replace');
  const dir = path.join(base, 'cipher');
  const oldData = rng.bytes(P + 300);
  const newData = rng.bytes(2 * P + 5);
  const target = path.join(dir, 'f.bin');
  const tmp = path.join(dir, 'f.tmp');
  const setUp = async (): Promise<void> => {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir);
    const vol = manualVolume(dir, mk);
    const f = await vol.create(target, 'f.bin', 0o600);
    await f.write(0, oldData);
    await f.flush('full');
    await vol.release(f);
    vol.close();
  };
  /** What an editor does: write a new file, close it, rename it over the old one (no fsync). */
  const replace = async (vol: Volume): Promise<void> => {
    const f = await vol.create(tmp, 'f.tmp', 0o600);
    await f.write(0, newData);
    await vol.release(f);
    await vol.beforeRename(tmp);
    vol.dir.at2(tmp, target, renameThroughFaultLayer);
    vol.renamed(tmp, target, (p) => path.basename(p));
  };
  let calls = 0;
  await setUp();
  setFaultHook(() => {
    calls++;
    return 'ok';
  });
  const dry = manualVolume(dir, mk);
  await replace(dry);
  setFaultHook(null);
  dry.close();
  const failures: string[] = [];
  // Call calls + 1: no crash at all, the power cut right after the rename returned.
  for (let n = 1; n <= calls + 1; n++) {
    await setUp();
    const model = new PowerCut();
    let count = 0;
    setFaultHook((op) => {
      const action = ++count === n ? 'crash' : 'ok';
      model.observe(op, action);
      return action;
    });
    const vol = manualVolume(dir, mk);
    try {
      await replace(vol);
    } catch (err) {
      if (!(err instanceof SimulatedCrash)) throw err;
    }
    // The process dies with the power: nothing more is written.
    dies(vol);
    model.cut(dir, rng);
    const after = manualVolume(dir, mk);
    await after.recover();
    let got: Buffer | string;
    try {
      got = await readAll(after, dir, 'f.bin');
    } catch (err) {
      got = (err as Error).message;
    }
    after.close();
    if (typeof got === 'string' || !(got.equals(oldData) || got.equals(newData))) {
      failures.push(`power cut at call ${n}: f.bin ${typeof got === 'string' ? got : `holds ${got.length} bytes, neither the old nor the new content`}`);
    }
    const report = await checkTree({ root: dir, key: mk.keys.key });
    for (const f of report.files) if (!['ok', 'empty', 'temp'].includes(f.status)) failures.push(`power cut at call ${n}: fsck ${f.path}: ${f.status}`);
  }
  t.deepEqual(failures, []);
});

test.serial("the dirty budget flushes the files that hold it: another file's changes do not make every write of this one seal", async (t) => {
  const dir = tempDir(t, 'budget');
  const mk = masterKeys(new Rng(seedFor(0xd0a9)).bytes(32));
  const vol = manualVolume(dir, mk, 4 * P);
  const a = await vol.create(path.join(dir, 'a.bin'), 'a.bin', 0o600);
  // Just under the budget, unsealed.
  await a.write(0, Buffer.alloc(4 * P - 100, 1));
  const b = await vol.create(path.join(dir, 'b.bin'), 'b.bin', 0o600);
  const sealedBefore = vol.counters.packagesSealed;
  for (let i = 0; i < 64; i++) await b.write(i * 1024, Buffer.alloc(1024, 2));
  const sealed = vol.counters.packagesSealed - sealedBefore;
  t.true(sealed <= 8, `${sealed} packages sealed for 64 writes of 1 KiB into one package of b.bin`);
  t.is(a.dirtyPackages, 0, "a.bin's changes were flushed");
  await vol.release(a);
  await vol.release(b);
  t.true((await readAll(vol, dir, 'a.bin')).equals(Buffer.alloc(4 * P - 100, 1)));
  t.true((await readAll(vol, dir, 'b.bin')).equals(Buffer.alloc(64 * 1024, 2)));
  vol.close();
});

test.serial('a directory renamed while the journal holds records of files in it: the data reaches the new names, and a later replay skips nothing it needs', async (t) => {
  const dir = tempDir(t, 'rename-dir');
  const mk = masterKeys(new Rng(seedFor(0xd0aa)).bytes(32));
  fs.mkdirSync(path.join(dir, 'd'));
  const vol = manualVolume(dir, mk);
  const data = new Map<string, Buffer>();
  for (const name of ['x', 'y']) {
    const bytes = new Rng(name.charCodeAt(0)).bytes(P + 99);
    data.set(name, bytes);
    const f = await vol.create(path.join(dir, 'd', name), `d/${name}`, 0o600);
    await f.write(0, bytes);
    await vol.release(f);
  }
  await vol.beforeRename(path.join(dir, 'd'));
  vol.dir.at2(path.join(dir, 'd'), path.join(dir, 'e'), renameThroughFaultLayer);
  vol.renamed(path.join(dir, 'd'), path.join(dir, 'e'), (p) => path.relative(dir, p));
  // The daemon dies before any other checkpoint: what the journal named d/x must not be needed.
  dies(vol);
  const again = manualVolume(dir, mk);
  const r = (await again.recover())!;
  t.deepEqual(r.skipped, []);
  for (const [name, bytes] of data) t.true((await readAll(again, dir, `e/${name}`)).equals(bytes), `e/${name}`);
  again.close();
});

test.serial('the journal log: a later batch of another generation ends it; one whose MAC fails is refused and reported; the batches before apply', async (t) => {
  for (const change of ['generation', 'mac'] as const) {
    const dir = tempDir(t, `log-${change}`);
    const mk = masterKeys(new Rng(seedFor(0xd0ab)).bytes(32));
    const file = path.join(dir, 'f.bin');
    const first = new Rng(5).bytes(P + 10);
    const vol = manualVolume(dir, mk);
    const f = await vol.create(file, 'f.bin', 0o600);
    await f.write(0, first);
    await f.flush('none');
    await f.write(0, Buffer.alloc(10, 7));
    await f.flush('none');
    dies(vol);
    const journalFile = path.join(dir, '.darefs', 'journal');
    const log = fs.readFileSync(journalFile);
    // DAREFSJ3: a 68-byte header (body length at 12, generation at 20, MAC at 36), then the body.
    const second = 68 + log.readUInt32LE(12);
    t.is(log.subarray(second, second + 8).toString(), 'DAREFSJ3');
    if (change === 'generation') log[second + 20] ^= 1;
    else log[second + 40] ^= 1;
    fs.writeFileSync(journalFile, log);
    const again = manualVolume(dir, mk);
    const r = (await again.recover())!;
    t.deepEqual(r.files, ['f.bin'], change);
    if (change === 'generation') t.false(r.discarded, 'another generation: where the log ends, nothing to say');
    else {
      t.like(r, { discarded: true, benign: false });
      t.regex(r.reason!, /MAC does not verify/);
    }
    t.true((await readAll(again, dir, 'f.bin')).equals(first), 'the first batch applied, the second not');
    again.close();
  }
});

test.serial('unlink while the journal holds a file: its last name, its packages are dropped; another name left, they go in place first', async (t) => {
  const dir = tempDir(t, 'unlink');
  const mk = masterKeys(new Rng(seedFor(0xd0ac)).bytes(32));
  const vol = manualVolume(dir, mk);
  const data = new Rng(6).bytes(P + 3);
  for (const name of ['gone.bin', 'linked.bin']) {
    const f = await vol.create(path.join(dir, name), name, 0o600);
    await f.write(0, data);
    await vol.release(f);
  }
  fs.linkSync(path.join(dir, 'linked.bin'), path.join(dir, 'other-name.bin'));
  const writes: string[] = [];
  setFaultHook((op) => {
    if (op.path !== undefined && !op.path.includes('.darefs')) writes.push(`${op.kind} ${path.basename(op.path)}`);
    return 'ok';
  });
  for (const name of ['gone.bin', 'linked.bin']) {
    const cipherPath = path.join(dir, name);
    const last = vol.beforeUnlink(cipherPath);
    fs.unlinkSync(cipherPath);
    vol.unlinked(cipherPath, last);
  }
  setFaultHook(null);
  t.deepEqual(writes.filter((w) => w.endsWith('gone.bin')), [], 'nothing written or synced for a file that is gone');
  t.true(writes.includes('fdatasync linked.bin'), 'the hard-linked file was written in place and synced before its name went');
  dies(vol);
  const again = manualVolume(dir, mk);
  const r = (await again.recover())!;
  t.true(r.skipped.every((k) => k.benign === true), JSON.stringify(r.skipped));
  t.true((await readAll(again, dir, 'other-name.bin')).equals(data), 'the other name holds the data');
  again.close();
});

test.serial('the MAC covers an image by its header and tag: bytes changed between them (checksum fixed up) fail the AEAD check at replay, nothing written', async (t) => {
  for (const master of [true, false]) {
    const dir = tempDir(t, `image-${master ? 'master' : 'ncrypt'}`);
    const mk = masterKeys(new Rng(seedFor(0xd0ad)).bytes(32));
    const file = path.join(dir, 'f.bin');
    const first = new Rng(7).bytes(2 * P);
    let vol = volume(dir, mk, master);
    let f = await vol.create(file, 'f.bin', 0o600);
    await f.write(0, first);
    await vol.release(f);
    vol.close();
    const onDisk = fs.readFileSync(file);
    vol = new Volume({ keys: mk.keys, settings: SETTINGS_V10, readOnly: false, packageCacheBytes: 4 * P, dirtyBytes: 64 * P, cipherDir: dir, journalKey: master ? journalKey(mk.masterKey) : undefined, commitInterval: 0 });
    f = await vol.open(file, 'f.bin');
    await f.write(P + 5, Buffer.from('changed'));
    await f.flush('none');
    dies(vol);
    const journalFile = path.join(dir, '.darefs', 'journal');
    const log = fs.readFileSync(journalFile);
    const length = log.readUInt32LE(12);
    // The image of package 1 ends the record, before its 32-byte tag: flip a byte in its middle.
    const imageEnd = 68 + length - 32;
    log[imageEnd - 1000] ^= 0x40;
    // The unkeyed checksum anyone can fix up (CRC-32 of the header up to it and the body).
    log.writeUInt32LE(zlib.crc32(log.subarray(68, 68 + length), zlib.crc32(log.subarray(0, 32))), 32);
    fs.writeFileSync(journalFile, log);
    const again = volume(dir, mk, master);
    const r = (await again.recover())!;
    t.false(r.discarded, 'the batch verifies');
    t.is(r.skipped.length, 1);
    t.regex(r.skipped[0].reason, /image of package 1 does not open under the file's key/);
    t.true(fs.readFileSync(file).equals(onDisk), 'the file untouched');
    again.close();
  }
});

/** The process dies: every later write-type call fails, so closing the volume writes nothing. */
function dies(vol: Volume): void {
  setFaultHook(() => 'crash');
  try {
    vol.close();
  } finally {
    setFaultHook(null);
  }
}

function renameThroughFaultLayer(from: string, to: string): void {
  io.renameSync(from, to);
}
