/**
 * The journal and `.darefs` in a hostile cipher directory (issue 10 items 1 and 2, FORMAT.md §6).
 * Each attack plants what whoever else writes the cipher directory could: a journal in the old
 * format whose unkeyed SHA-256 is right (what darefs before the fix applied), and a journal in the
 * current format, authenticated or not, whose records point out of the cipher directory, through
 * symlinks, or at images that do not authenticate; `.darefs` or files in it as symlinks, owned by
 * another user, writable by all. Nothing outside or inside may change, and what was refused is
 * named (path and reason).
 */
import test, { ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { crc32 } from 'node:zlib';
import { Cipher, MAX_PACKAGE, MAX_PAYLOAD, PREFIX_SIZE, Version, packageOffset, randomNonce, sealPackage } from '../src/dare';
import { changePassphrase, initVolume, journalEntryKey, journalKey } from '../src/keys';
import { ReplayResult, Volume, openVolume } from '../src/store';
import { darefsMount, writeNcryptFile, writePassfile } from './helpers/darefs';
import { VECTOR_PASSWORD, ncryptKey } from './helpers/keys-for-tests';
import { assertNoFuseMountsLeft, cleanupLeftovers, withMount } from './helpers/mount';
import { stopCleanly } from './helpers/rw';
import { MasterKeys, SETTINGS_V10, masterKeys, tempDir, writeStreamFile } from './helpers/store';

const P = MAX_PAYLOAD;
/** A first line of exactly 32 bytes: the old replay took it for a matching prefix. */
const PASSWD = 'root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n';

interface RawRecord {
  path: string;
  prefix: Buffer;
  size: number;
  writes: Array<{ offset: number; bytes: Buffer }>;
}

function encodeRecord(r: RawRecord): Buffer {
  const name = Buffer.from(r.path);
  const head = Buffer.alloc(2 + name.length + 32 + 12);
  head.writeUInt16LE(name.length, 0);
  name.copy(head, 2);
  r.prefix.copy(head, 2 + name.length);
  head.writeDoubleLE(r.size, 2 + name.length + 32);
  head.writeUInt32LE(r.writes.length, 2 + name.length + 40);
  const parts: Buffer[] = [head];
  for (const w of r.writes) {
    const wh = Buffer.alloc(12);
    wh.writeDoubleLE(w.offset, 0);
    wh.writeUInt32LE(w.bytes.length, 8);
    parts.push(wh, w.bytes);
  }
  return Buffer.concat(parts);
}

/** The old format (DAREFSJ1): only an unkeyed SHA-256 over the body, which anyone can compute. */
function oldJournal(records: RawRecord[]): Buffer {
  const body = Buffer.concat(records.map(encodeRecord));
  const header = Buffer.alloc(48);
  header.write('DAREFSJ1', 0);
  header.writeUInt32LE(body.length, 8);
  header.writeUInt32LE(records.length, 12);
  createHash('sha256').update(body).digest().copy(header, 16);
  return Buffer.concat([header, body]);
}

/**
 * The current format (DAREFSJ2), with its checksum right. `batchKey`: master mode, the batch MAC
 * under it (a wrong key or none: a forgery). `fileKey`: ncrypt mode, a MAC per record under a key
 * derived from the file's key (undefined: a forged, random tag).
 */
function newJournal(records: RawRecord[], opts: { batchKey?: Buffer; master?: boolean; fileKey?: (prefix: Buffer) => Buffer }): Buffer {
  const master = opts.master ?? opts.batchKey !== undefined;
  const body = Buffer.concat(
    records.map((r) => {
      const rec = encodeRecord(r);
      let tag = Buffer.alloc(32);
      if (!master) {
        tag = opts.fileKey
          ? createHmac('sha256', journalEntryKey(opts.fileKey(r.prefix))).update('darefs journal record\0').update(rec).digest()
          : randomBytes(32);
      }
      return Buffer.concat([rec, tag]);
    }),
  );
  const header = journalHeader(master ? 1 : 2, body, records.length);
  if (master) (opts.batchKey ? createHmac('sha256', opts.batchKey).update(header.subarray(0, 20)).update(body).digest() : randomBytes(32)).copy(header, 24);
  return Buffer.concat([header, body]);
}

/** A DAREFSJ2 header (56 bytes) for `body`, its CRC-32 right, its MAC left zero. */
function journalHeader(mode: number, body: Buffer, count: number): Buffer {
  const header = Buffer.alloc(J2_HEADER);
  header.write('DAREFSJ2', 0);
  header.writeUInt32LE(mode, 8);
  header.writeUInt32LE(body.length, 12);
  header.writeUInt32LE(count, 16);
  header.writeUInt32LE(crc32(body, crc32(header.subarray(0, 20))), 20);
  return header;
}

const J2_HEADER = 56;

interface Scene {
  base: string;
  cipher: string;
  outside: string;
  mk: MasterKeys;
  /** The master key's journal key (master mode). */
  jkey: Buffer;
  /** A genuine 3-package 1.0 file inside. */
  file: string;
  filePrefix: Buffer;
}

async function scene(t: ExecutionContext): Promise<Scene> {
  const base = tempDir(t, 'journal-hostile');
  const cipher = path.join(base, 'cipher');
  const outside = path.join(base, 'outside');
  fs.mkdirSync(cipher);
  fs.mkdirSync(outside);
  fs.mkdirSync(path.join(cipher, '.darefs'), { mode: 0o700 });
  fs.writeFileSync(path.join(outside, 'passwd'), PASSWD);
  fs.writeFileSync(path.join(outside, 'short'), 'short file');
  const mk = masterKeys();
  const file = path.join(cipher, 'f.bin');
  const filePrefix = await writeStreamFile(file, randomBytes(2 * P + 100), mk, Version.V10);
  return { base, cipher, outside, mk, jkey: journalKey(mk.masterKey), file, filePrefix };
}

function plant(s: Scene, journal: Buffer): void {
  fs.writeFileSync(path.join(s.cipher, '.darefs', 'journal'), journal);
}

/** sha256 of every file under the scene (cipher and outside), the journal left out. */
function snapshot(s: Scene): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (dir: string): void => {
    for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, d.name);
      if (d.name === 'journal') continue;
      if (d.isDirectory()) walk(p);
      else if (d.isFile()) out.set(p, createHash('sha256').update(fs.readFileSync(p)).digest('hex'));
    }
  };
  walk(s.base);
  return out;
}

/** Replays as a read-write mount does, with (master) or without (ncrypt) the journal key. */
async function recover(s: Scene, master: boolean): Promise<ReplayResult> {
  const vol = new Volume({
    keys: s.mk.keys,
    settings: SETTINGS_V10,
    readOnly: false,
    packageCacheBytes: 1 << 20,
    dirtyBytes: 1 << 20,
    cipherDir: s.cipher,
    journalKey: master ? Buffer.from(s.jkey) : undefined,
  });
  try {
    return (await vol.recover())!;
  } finally {
    vol.close();
  }
}

/** A record that overwrites the target past its first 32 bytes and grows it. */
function evil(p: string, prefix: Buffer): RawRecord {
  return { path: p, prefix, size: 200, writes: [{ offset: 32, bytes: Buffer.from('attacker:x:0:0::/:/bin/sh\n'.repeat(4)) }] };
}

const PASSWD_PREFIX = Buffer.from(PASSWD).subarray(0, 32);
/** What the old replay compared for a 10-byte file: its bytes, then zeros. */
const SHORT_PREFIX = Buffer.concat([Buffer.from('short file'), Buffer.alloc(22)]);

/**
 * Plants `records` three ways (old format with a right SHA-256; current format authenticated with
 * the journal key, so that only the record checks stand in the way; current format, ncrypt mode,
 * record MACs right) and checks after each replay that no file changed and each record was
 * refused by name.
 */
async function refusedEveryWay(t: ExecutionContext, s: Scene, records: RawRecord[], reason: RegExp): Promise<void> {
  const before = snapshot(s);
  plant(s, oldJournal(records));
  const old = await recover(s, true);
  t.deepEqual(snapshot(s), before, 'old format: nothing changed');
  t.true(old.discarded, 'old format: discarded');
  t.regex(old.reason ?? '', /old journal format.*not applied/);
  for (const master of [true, false]) {
    plant(s, newJournal(records, master ? { batchKey: s.jkey } : { fileKey: s.mk.keyOf }));
    const r = await recover(s, master);
    t.deepEqual(snapshot(s), before, `${master ? 'master' : 'ncrypt'} mode: nothing changed`);
    t.deepEqual(r.files, [], 'nothing replayed');
    t.deepEqual(
      r.skipped.map((k) => k.path),
      records.map((k) => k.path),
      'every record named',
    );
    for (const k of r.skipped) t.regex(k.reason, reason);
  }
}

test('journal records with "../" are refused: the file outside is not written', async (t) => {
  const s = await scene(t);
  await refusedEveryWay(t, s, [evil('../outside/passwd', PASSWD_PREFIX), evil('../outside/short', SHORT_PREFIX)], /"\.\." component/);
  t.is(fs.readFileSync(path.join(s.outside, 'passwd'), 'utf8'), PASSWD);
});

test('journal records with an absolute path are refused', async (t) => {
  const s = await scene(t);
  await refusedEveryWay(t, s, [evil(path.join(s.outside, 'passwd'), PASSWD_PREFIX), evil(path.join(s.cipher, 'f.bin'), s.filePrefix)], /not a path relative to the cipher directory/);
});

test('a journal record whose target is a symlink to a file outside (also one shorter than a prefix) is refused', async (t) => {
  const s = await scene(t);
  fs.symlinkSync(path.join(s.outside, 'passwd'), path.join(s.cipher, 'link.bin'));
  fs.mkdirSync(path.join(s.cipher, 'sub'));
  fs.symlinkSync(s.outside, path.join(s.cipher, 'sub', 'dir'));
  fs.symlinkSync('../outside/short', path.join(s.cipher, 'short.bin'));
  await refusedEveryWay(t, s, [evil('link.bin', PASSWD_PREFIX), evil('sub/dir/passwd', PASSWD_PREFIX), evil('short.bin', SHORT_PREFIX)], /symlink/);
  t.is(fs.readFileSync(path.join(s.outside, 'short'), 'utf8'), 'short file');
});

test('journal records naming .darefs or a FIFO are refused, and a FIFO does not block the replay', async (t) => {
  const s = await scene(t);
  fs.writeFileSync(path.join(s.cipher, '.darefs', 'config.json'), '{"formatVersion": 1, "keyMode": "master", "x": 1}\n');
  const config = fs.readFileSync(path.join(s.cipher, '.darefs', 'config.json')).subarray(0, 32);
  execFileSync('mkfifo', [path.join(s.cipher, 'fifo.bin')]);
  const before = snapshot(s);
  plant(s, newJournal([evil('.darefs/config.json', config), evil('fifo.bin', Buffer.alloc(32))], { batchKey: s.jkey }));
  const r = await recover(s, true);
  t.deepEqual(snapshot(s), before);
  t.deepEqual(r.skipped.map((k) => [k.path, /metadata|regular file/.test(k.reason)]), [['.darefs/config.json', true], ['fifo.bin', true]]);
});

/** A record over f.bin (its right prefix) with an image of package 1 that is not the file's. */
function forged(s: Scene, image: Buffer, size = fs.statSync(s.file).size): RawRecord {
  return { path: 'f.bin', prefix: s.filePrefix, size, writes: [{ offset: packageOffset(1), bytes: image }] };
}

test('master mode: a batch with a right SHA-256 but no or a wrong MAC is discarded unapplied, and so is the old format', async (t) => {
  const s = await scene(t);
  const before = snapshot(s);
  const junk = randomBytes(MAX_PACKAGE);
  for (const journal of [oldJournal([forged(s, junk)]), newJournal([forged(s, junk)], { master: true }), newJournal([forged(s, junk)], { batchKey: randomBytes(32) })]) {
    plant(s, journal);
    const r = await recover(s, true);
    t.deepEqual(snapshot(s), before, 'f.bin unchanged');
    t.true(r.discarded);
    t.regex(r.reason ?? '', /old journal format|MAC does not verify/);
    t.deepEqual(r.files, []);
  }
  // In ncrypt mode (no journal key) a master-mode batch cannot be checked: discarded too.
  plant(s, newJournal([forged(s, junk)], { batchKey: s.jkey }));
  t.regex((await recover(s, false)).reason ?? '', /master key/);
  t.deepEqual(snapshot(s), before);
});

test('ncrypt mode: a planted journal whose images or sizes do not authenticate is refused record by record', async (t) => {
  const s = await scene(t);
  const before = snapshot(s);
  const size = fs.statSync(s.file).size;
  const otherKey = randomBytes(32);
  // Sealed as package 1 of a 1.0 stream, but under another key.
  const alien = sealPackage(otherKey, { version: Version.V10, cipher: Cipher.AES_256_GCM, index: 1, nonce: randomNonce(Version.V10), final: false }, randomBytes(P));
  // Under the file's own key, but as package 0: not the package at its index.
  const moved = sealPackage(s.mk.keyOf(s.filePrefix), { version: Version.V10, cipher: Cipher.AES_256_GCM, index: 0, nonce: randomNonce(Version.V10), final: false }, randomBytes(P));
  const cases: Array<[RawRecord, RegExp]> = [
    [forged(s, randomBytes(MAX_PACKAGE)), /image of package 1 does not open/],
    [forged(s, alien), /image of package 1 does not open/],
    [forged(s, moved), /image of package 1 does not open/],
    [{ path: 'f.bin', prefix: s.filePrefix, size, writes: [{ offset: packageOffset(1) + 5, bytes: alien }] }, /not a package boundary/],
    // Cuts the file in the middle of a package: no authenticated package ends it there.
    [{ path: 'f.bin', prefix: s.filePrefix, size: PREFIX_SIZE + MAX_PACKAGE + 1000, writes: [] }, /does not open as the last package/],
    [{ path: 'f.bin', prefix: s.filePrefix, size: size + 10 * MAX_PACKAGE, writes: [] }, /extends the file/],
  ];
  plant(s, oldJournal(cases.map(([r]) => r)));
  t.true((await recover(s, false)).discarded);
  t.deepEqual(snapshot(s), before, 'old format: f.bin unchanged');
  // With the record MACs right (as if the password leaked to the attacker): the image checks hold,
  // record by record. A file's records that pass them are merged (the last size counts), so each
  // planted size goes in a journal of its own.
  const imageCases = cases.slice(0, 4);
  plant(s, newJournal(imageCases.map(([r]) => r), { fileKey: s.mk.keyOf }));
  const r = await recover(s, false);
  t.deepEqual(snapshot(s), before, 'f.bin unchanged');
  t.is(r.skipped.length, imageCases.length);
  r.skipped.forEach((k, i) => t.regex(k.reason, imageCases[i][1], `${k.path}: ${k.reason}`));
  for (const [record, reason] of cases.slice(4)) {
    plant(s, newJournal([record], { fileKey: s.mk.keyOf }));
    const one = await recover(s, false);
    t.deepEqual(snapshot(s), before, 'f.bin unchanged');
    t.is(one.skipped.length, 1);
    t.regex(one.skipped[0].reason, reason);
  }
  // Without the password: the record MAC already fails.
  plant(s, newJournal([forged(s, alien)], {}));
  const noMac = await recover(s, false);
  t.deepEqual(snapshot(s), before);
  t.deepEqual(noMac.skipped.map((k) => k.path), ['f.bin']);
  t.regex(noMac.skipped[0].reason, /MAC does not verify under the file's key/);
});

test('a genuine record (images sealed at their index under the file key) still replays in both modes, a cut at a package end too', async (t) => {
  const s = await scene(t);
  const key = s.mk.keyOf(s.filePrefix);
  const plain = randomBytes(P);
  const image = sealPackage(key, { version: Version.V10, cipher: Cipher.AES_256_GCM, index: 1, nonce: randomNonce(Version.V10), final: false }, plain);
  const size = fs.statSync(s.file).size;
  for (const master of [true, false]) {
    plant(s, newJournal([forged(s, image, size)], master ? { batchKey: s.jkey } : { fileKey: s.mk.keyOf }));
    const r = await recover(s, master);
    t.deepEqual({ files: r.files, packages: r.packages, skipped: r.skipped }, { files: ['f.bin'], packages: 1, skipped: [] });
    t.true(fs.readFileSync(s.file).subarray(packageOffset(1), packageOffset(2)).equals(image));
  }
  // A cut at the end of package 1 (a 1.0 stream: a whole package can be the last).
  plant(s, newJournal([{ path: 'f.bin', prefix: s.filePrefix, size: packageOffset(2), writes: [] }], { fileKey: s.mk.keyOf }));
  t.deepEqual((await recover(s, false)).skipped, []);
  t.is(fs.statSync(s.file).size, packageOffset(2));
});

// ---- .darefs itself ----

const PASS = 'correct horse';
const FAST = { N: 1024, r: 8, p: 1 };

async function masterVolume(t: ExecutionContext): Promise<{ base: string; cipher: string; outside: string }> {
  const base = tempDir(t, 'meta-hostile');
  const cipher = path.join(base, 'cipher');
  const outside = path.join(base, 'outside');
  fs.mkdirSync(cipher);
  fs.mkdirSync(outside);
  await initVolume(cipher, { passphrase: Buffer.from(PASS), scrypt: FAST });
  return { base, cipher, outside };
}

function open(cipher: string, ncrypt = false): Promise<unknown> {
  return openVolume({ cipherDir: cipher, mode: ncrypt ? 'ncrypt' : 'auto', secrets: { passphrase: Buffer.from(PASS) }, readOnly: false }).then((o) => o.dispose());
}

const THIRTY = 'thirty bytes of someone else\n!';

test('.darefs as a symlink to a directory outside: the mount is refused, the files there untouched', async (t) => {
  const v = await masterVolume(t);
  const meta = path.join(v.outside, 'meta');
  fs.renameSync(path.join(v.cipher, '.darefs'), meta);
  fs.symlinkSync(meta, path.join(v.cipher, '.darefs'));
  fs.writeFileSync(path.join(meta, 'journal'), THIRTY);
  await t.throwsAsync(open(v.cipher), { name: 'UnsafeMetaDirError', message: /\.darefs is a symlink: darefs never follows one there.*remove the symlink/ });
  t.is(fs.readFileSync(path.join(meta, 'journal'), 'utf8'), THIRTY);
  await t.throwsAsync(changePassphrase(v.cipher, Buffer.from(PASS), Buffer.from('new'), { scrypt: FAST }), { name: 'UnsafeMetaDirError' });
  // init over it (what it points to holds no config): refused, nothing written there.
  fs.rmSync(path.join(meta, 'config.json'));
  await t.throwsAsync(initVolume(v.cipher, { passphrase: Buffer.from(PASS), scrypt: FAST }), { name: 'UnsafeMetaDirError' });
  t.deepEqual(fs.readdirSync(meta), ['journal']);
});

test('.darefs/journal as a symlink to a file outside: the mount is refused (master and ncrypt mode), the file untouched', async (t) => {
  const v = await masterVolume(t);
  const victim = path.join(v.outside, 'victim');
  fs.writeFileSync(victim, THIRTY);
  fs.symlinkSync(victim, path.join(v.cipher, '.darefs', 'journal'));
  await t.throwsAsync(open(v.cipher), { name: 'UnsafeMetaDirError', message: /journal is a symlink/ });
  t.is(fs.readFileSync(victim, 'utf8'), THIRTY);
  // ncrypt mode: no config, only the attacker's .darefs/journal.
  const nc = path.join(v.base, 'ncrypt');
  fs.mkdirSync(path.join(nc, '.darefs'), { recursive: true, mode: 0o700 });
  fs.symlinkSync(victim, path.join(nc, '.darefs', 'journal'));
  await t.throwsAsync(open(nc, true), { name: 'UnsafeMetaDirError', message: /journal is a symlink/ });
  t.is(fs.readFileSync(victim, 'utf8'), THIRTY);
});

test('.darefs/config.json.bak as a symlink: passwd does not write through it', async (t) => {
  const v = await masterVolume(t);
  const victim = path.join(v.outside, 'victim');
  fs.writeFileSync(victim, THIRTY);
  fs.symlinkSync(victim, path.join(v.cipher, '.darefs', 'config.json.bak'));
  await changePassphrase(v.cipher, Buffer.from(PASS), Buffer.from('new pass'), { scrypt: FAST });
  t.is(fs.readFileSync(victim, 'utf8'), THIRTY);
  t.false(fs.existsSync(path.join(v.cipher, '.darefs', 'config.json.bak')));
});

test('.darefs owned by another user, or writable by others: mount, passwd and init refuse and say what to do', async (t) => {
  const v = await masterVolume(t);
  const meta = path.join(v.cipher, '.darefs');
  fs.chmodSync(meta, 0o777);
  await t.throwsAsync(open(v.cipher), { name: 'UnsafeMetaDirError', message: /writable by its group and others \(mode 0777\).*chmod go-w/ });
  await t.throwsAsync(changePassphrase(v.cipher, Buffer.from(PASS), Buffer.from('new'), { scrypt: FAST }), { name: 'UnsafeMetaDirError' });
  fs.chmodSync(meta, 0o700);
  fs.chownSync(meta, 65534, 65534);
  await t.throwsAsync(open(v.cipher), { name: 'UnsafeMetaDirError', message: /owned by uid 65534, not by the user darefs runs as \(uid 0\).*chown/ });
  // ncrypt mode: a .darefs someone else made (to plant a journal) is refused too.
  const nc = path.join(v.base, 'ncrypt');
  fs.mkdirSync(path.join(nc, '.darefs'), { recursive: true, mode: 0o700 });
  fs.chownSync(path.join(nc, '.darefs'), 65534, 65534);
  await t.throwsAsync(open(nc, true), { name: 'UnsafeMetaDirError' });
  fs.chownSync(meta, 0, 0);
  await t.notThrowsAsync(open(v.cipher), 'back to ours: mounts');
});

// ---- through a real mount (ncrypt mode: anyone who writes the directory can make .darefs/journal) ----

test.after.always(async () => {
  await cleanupLeftovers();
  await assertNoFuseMountsLeft();
});

test.serial('ncrypt mount: a genuine record replays, planted ones are skipped with a log line naming path and reason, the mount goes on', async (t) => {
  t.timeout(120_000);
  const plain = randomBytes(2 * P + 99);
  const patched = Buffer.from(plain);
  let outsideFile = '';
  await withMount(
    t,
    darefsMount(['--ncrypt']),
    async (m) => {
      const out = m.output();
      t.regex(out, /replayed 1 package of 1 file from the journal/);
      t.regex(out, /journal record for "\.\.\/outside\/passwd" skipped, nothing written: has an empty, "\." or "\.\." component/);
      t.regex(out, /journal record for "n\.bin" skipped, nothing written: its MAC does not verify under the file's key/);
      t.true((await fsp.readFile(path.join(m.mountpoint, 'n.bin'))).equals(patched), 'the genuine record applied');
      t.is(fs.readFileSync(outsideFile, 'utf8'), PASSWD, 'the file outside untouched');
      await stopCleanly(t, m);
    },
    {
      setup: async (dirs) => {
        await writePassfile(dirs);
        const file = path.join(dirs.cipherDir, 'n.bin');
        await writeNcryptFile(file, plain, Version.V10);
        outsideFile = path.join(dirs.root, 'outside', 'passwd');
        fs.mkdirSync(path.dirname(outsideFile));
        fs.writeFileSync(outsideFile, PASSWD);
        const raw = fs.readFileSync(file);
        const prefix = raw.subarray(0, 32);
        const key = await ncryptKey(VECTOR_PASSWORD, prefix);
        // What a crash after the commit of a rewrite of package 1 leaves: the new image, the package torn.
        const patch = randomBytes(P);
        patch.copy(patched, P);
        const image = sealPackage(key, { version: Version.V10, cipher: Cipher.AES_256_GCM, index: 1, nonce: randomNonce(Version.V10), final: false }, patch);
        image.subarray(0, 1000).copy(raw, packageOffset(1));
        fs.writeFileSync(file, raw);
        const genuine = newJournal([{ path: 'n.bin', prefix, size: raw.length, writes: [{ offset: packageOffset(1), bytes: image }] }], { fileKey: () => key });
        // The attacker's records, MACs made up (the attacker has not the password).
        const planted = newJournal([evil('../outside/passwd', PASSWD_PREFIX), { path: 'n.bin', prefix, size: 32, writes: [] }], {});
        // One batch: the genuine record, then the planted ones (their bytes as the attacker appends them).
        const count = 3;
        const body = Buffer.concat([genuine.subarray(J2_HEADER), planted.subarray(J2_HEADER)]);
        const header = journalHeader(2, body, count);
        fs.mkdirSync(path.join(dirs.cipherDir, '.darefs'), { mode: 0o700 });
        fs.writeFileSync(path.join(dirs.cipherDir, '.darefs', 'journal'), Buffer.concat([header, body]));
      },
    },
  );
});
