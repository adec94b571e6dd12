/**
 * The store's name schemes (src/store/names.ts) on a real cipher directory: what a listing shows
 * and refuses (FORMAT.md §8: names that do not authenticate are listed nowhere), long names and
 * their `.name` files under attack, the order that keeps the pair consistent through a crash at
 * any point of create / link / rename / unlink / mkdir / rmdir (with the power-cut model of
 * test/helpers/power-cut.ts), and the lossless name text of src/store/name-text.ts.
 */
import test, { ExecutionContext } from 'ava';
import * as crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { nameKeys } from '../src/keys';
import { CipherDir, EncryptedNames, PlainNames, SimulatedCrash, TEMP_PREFIX, isPlainText, nameBytes, nameText, setFaultHook } from '../src/store';
import * as io from '../src/store/io';
import { refEncryptName, refEntryName, refNameKeys } from './helpers/names';
import { PowerCut } from './helpers/power-cut';
import { Rng, tempDir } from './helpers/store';

test.afterEach.always(() => setFaultHook(null));

const MASTER = crypto.createHash('sha256').update('store-names test master').digest();

interface Fixture {
  root: string;
  dir: CipherDir;
  names: EncryptedNames;
}

function fixture(t: ExecutionContext): Fixture {
  const root = tempDir(t, 'names');
  const dir = CipherDir.open(root);
  const names = new EncryptedNames(nameKeys(MASTER));
  t.teardown(() => {
    names.dispose();
    dir.close();
  });
  return { root, dir, names };
}

const LONG = 'L'.repeat(200);
const LONG2 = 'M'.repeat(255);

/** Makes a regular file at plaintext `rel` the way the mount does (scheme order, confined). */
async function makeFile(f: Fixture, rel: string, data = 'x'): Promise<string> {
  const c = path.join(f.root, f.names.toCipher(rel));
  await f.names.makeEntry(f.dir, c, () => {
    const fd = io.createSync(c, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600, (p, fl, m) => f.dir.openFile(p, fl, m));
    io.writeSync(fd, Buffer.from(data), 0, data.length, 0, c);
    fs.closeSync(fd);
  });
  return c;
}

function listed(f: Fixture, rel = ''): string[] {
  return f.names
    .list(f.dir, path.join(f.root, f.names.toCipher(rel)))
    .entries.map((e) => e.name)
    .sort();
}

test.serial('cipher names are the §8 entry names of the plaintext names, component by component; listings show the plaintext', async (t) => {
  const f = fixture(t);
  const ref = refNameKeys(MASTER);
  fs.mkdirSync(path.join(f.root, f.names.toCipher('docs')));
  await makeFile(f, 'docs/report.pdf');
  await makeFile(f, LONG);
  const expected = [refEntryName(refEncryptName(ref, Buffer.from('docs'))), refEntryName(refEncryptName(ref, Buffer.from('report.pdf')))].join('/');
  t.is(f.names.toCipher('docs/report.pdf'), expected);
  t.true(fs.existsSync(path.join(f.root, expected)));
  t.deepEqual(listed(f), [LONG, 'docs'].sort());
  t.deepEqual(listed(f, 'docs'), ['report.pdf']);
  // Nothing in the cipher directory says "report", "docs" or "LLL".
  const all = execFileSync('find', [f.root], { encoding: 'utf8' });
  t.false(/report|docs|LLLL/.test(all), all);
  // The long entry's .name file holds the full cipher name.
  const longEntry = f.names.toCipher(LONG);
  t.true(longEntry.startsWith('dare1.long.'));
  t.is(fs.readFileSync(path.join(f.root, longEntry + '.name'), 'latin1'), refEncryptName(ref, Buffer.from(LONG)));
  t.is(f.names.toPlain(f.names.toCipher('docs/report.pdf')), 'docs/report.pdf');
});

test.serial('darefs entries (.darefs at the root, temporary files, .name files) are never listed', async (t) => {
  const f = fixture(t);
  fs.mkdirSync(path.join(f.root, '.darefs'));
  fs.writeFileSync(path.join(f.root, `${TEMP_PREFIX}0123`), '');
  await makeFile(f, LONG);
  const listing = f.names.list(f.dir, f.root);
  t.deepEqual(listing.entries.map((e) => e.name), [LONG]);
  t.deepEqual(listing.refused, []);
  // Plain names hide the same entries of their own.
  const plain = new PlainNames().list(f.dir, f.root);
  t.deepEqual(plain.entries.map((e) => e.name).sort(), [f.names.toCipher(LONG), f.names.toCipher(LONG) + '.name'].sort());
});

test.serial('tampered names are refused with a reason, never shown: flipped character, foreign name, swapped and missing .name files', async (t) => {
  const f = fixture(t);
  const a = await makeFile(f, 'alpha');
  const l1 = await makeFile(f, LONG);
  const l2 = await makeFile(f, LONG2);
  // A flipped character in a cipher name.
  const base = path.basename(a);
  const flipped = base.slice(0, 5) + (base[5] === 'A' ? 'B' : 'A') + base.slice(6);
  fs.renameSync(a, path.join(f.root, flipped));
  // A name planted by someone without the key.
  fs.writeFileSync(path.join(f.root, 'planted.txt'), 'x');
  // Two long entries' .name files swapped.
  const n1 = l1 + '.name';
  const n2 = l2 + '.name';
  const tmp = path.join(f.root, 'swap');
  fs.renameSync(n1, tmp);
  fs.renameSync(n2, n1);
  fs.renameSync(tmp, n2);
  let listing = f.names.list(f.dir, f.root);
  t.deepEqual(listing.entries, []);
  const reasons = new Map(listing.refused.map((r) => [r.entry, r.reason]));
  t.regex(reasons.get(flipped)!, /does not authenticate/);
  t.regex(reasons.get('planted.txt')!, /not base64url/);
  t.regex(reasons.get(path.basename(l1))!, /holds another name/);
  t.regex(reasons.get(path.basename(l2))!, /holds another name/);
  // A missing .name file.
  fs.unlinkSync(n1);
  listing = f.names.list(f.dir, f.root);
  t.regex(new Map(listing.refused.map((r) => [r.entry, r.reason])).get(path.basename(l1))!, /no \.name file/);
});

test.serial('a .name file that is a symlink, a FIFO or oversized is refused without being followed or blocking; beforeEntry replaces it, writing nowhere else', async (t) => {
  const f = fixture(t);
  const outside = tempDir(t, 'outside');
  const secret = path.join(outside, 'secret');
  fs.writeFileSync(secret, 'do not touch');
  const l1 = await makeFile(f, LONG);
  const nameFile = l1 + '.name';
  fs.unlinkSync(nameFile);
  fs.symlinkSync(secret, nameFile);
  t.regex(f.names.list(f.dir, f.root).refused[0].reason, /symlink/);
  // Making the entry again (after a rename onto it, say) puts a real .name file in place.
  fs.unlinkSync(l1);
  await makeFile(f, LONG);
  t.false(fs.lstatSync(nameFile).isSymbolicLink());
  t.is(fs.readFileSync(secret, 'utf8'), 'do not touch');
  t.deepEqual(listed(f), [LONG]);
  // A FIFO: refused at once (opening it would block).
  fs.unlinkSync(nameFile);
  execFileSync('mkfifo', [nameFile]);
  t.regex(f.names.list(f.dir, f.root).refused[0].reason, /not a regular file/);
  fs.unlinkSync(nameFile);
  fs.writeFileSync(nameFile, 'A'.repeat(5000));
  t.regex(f.names.list(f.dir, f.root).refused[0].reason, /longer than any cipher name/);
});

test.serial('a .name file is durable before its entry: file synced, renamed into place, directory synced, then the entry', async (t) => {
  const f = fixture(t);
  const ops: string[] = [];
  setFaultHook((op) => {
    const p = op.path ?? '';
    const what = p.endsWith('.name') ? 'name' : path.basename(p).startsWith(TEMP_PREFIX) ? 'tmp' : p === f.root ? 'dir' : 'entry';
    ops.push(`${op.kind} ${what}`);
    return 'ok';
  });
  await makeFile(f, LONG);
  t.deepEqual(ops, ['create tmp', 'write tmp', 'fsync tmp', 'rename name', 'fsync dir', 'create entry', 'write entry']);
  // A short name needs nothing of the kind.
  ops.length = 0;
  await makeFile(f, 'short');
  t.deepEqual(ops, ['create entry', 'write entry']);
});

test.serial('removal and rename: the entry goes first, its .name after; a rename onto another name of the same inode keeps both', async (t) => {
  const f = fixture(t);
  const l1 = await makeFile(f, LONG);
  const l2c = path.join(f.root, f.names.toCipher(LONG2));
  await f.names.makeEntry(f.dir, l2c, () => fs.linkSync(l1, l2c));
  // rename(2) between two names of one inode does nothing: both stay, so both .name files stay.
  await f.names.moveEntry(f.dir, l1, l2c, () => fs.renameSync(l1, l2c));
  t.deepEqual(listed(f), [LONG, LONG2].sort());
  f.names.removeEntry(f.dir, l2c, () => fs.unlinkSync(l2c));
  t.false(fs.existsSync(l2c + '.name'));
  t.deepEqual(listed(f), [LONG]);
  const short = path.join(f.root, f.names.toCipher('short'));
  await f.names.moveEntry(f.dir, l1, short, () => fs.renameSync(l1, short));
  t.deepEqual(fs.readdirSync(f.root), [path.basename(short)]);
});

/** The scripted changes of the crash test, each through io (every write-type call a crash point). */
async function script(f: Fixture): Promise<void> {
  const c = (rel: string): string => path.join(f.root, f.names.toCipher(rel));
  const a = await makeFile(f, 'A'.repeat(180));
  await f.names.makeEntry(f.dir, c('B'.repeat(190)), () => io.linkSync(a, c('B'.repeat(190))));
  await f.names.moveEntry(f.dir, c('B'.repeat(190)), c('C'.repeat(250)), () => io.renameSync(c('B'.repeat(190)), c('C'.repeat(250))));
  f.names.removeEntry(f.dir, c('C'.repeat(250)), () => io.unlinkSync(c('C'.repeat(250))));
  await f.names.makeEntry(f.dir, c('D'.repeat(170)), () => io.mkdirSync(c('D'.repeat(170)), 0o700));
  await makeFile(f, `${'D'.repeat(170)}/${'E'.repeat(200)}`);
  f.names.removeEntry(f.dir, c(`${'D'.repeat(170)}/${'E'.repeat(200)}`), () => io.unlinkSync(c(`${'D'.repeat(170)}/${'E'.repeat(200)}`)));
  f.names.removeDirectory(f.dir, c('D'.repeat(170)));
  await f.names.moveEntry(f.dir, a, c('short'), () => io.renameSync(a, c('short')));
  await f.names.moveEntry(f.dir, c('short'), c('F'.repeat(230)), () => io.renameSync(c('short'), c('F'.repeat(230))));
}

/** Every entry of the tree opens (no refused name anywhere): what a crash must never break. */
function checkTree(t: ExecutionContext, f: Fixture, cipherDir: string, where: string): void {
  const listing = f.names.list(f.dir, cipherDir);
  t.deepEqual(listing.refused, [], where);
  for (const e of listing.entries) {
    const p = path.join(cipherDir, e.entry);
    if (fs.lstatSync(p).isDirectory()) checkTree(t, f, p, where);
  }
}

test.serial('a crash at any write of create, link, rename, unlink, mkdir and rmdir with long names, then a power cut, leaves every entry with its name', async (t) => {
  let total = 0;
  {
    const f = fixture(t);
    setFaultHook(() => {
      total++;
      return 'ok';
    });
    await script(f);
    setFaultHook(null);
    checkTree(t, f, f.root, 'without a crash');
    t.deepEqual(listed(f), ['F'.repeat(230)]);
    t.deepEqual(fs.readdirSync(f.root).filter((e) => e.endsWith('.name')).length, 1, 'no .name left behind');
  }
  t.true(total > 20, `${total} write-type calls`);
  const rng = new Rng(0x5eed);
  for (let crashAt = 1; crashAt <= total; crashAt++) {
    for (let round = 0; round < 3; round++) {
      const f = fixture(t);
      const cut = new PowerCut();
      let n = 0;
      setFaultHook((op) => {
        const action = ++n === crashAt ? (round === 0 ? 'crash' : 'half') : 'ok';
        cut.observe(op, action);
        return action;
      });
      await t.throwsAsync(script(f), { instanceOf: SimulatedCrash });
      setFaultHook(null);
      cut.cut(f.root, rng);
      checkTree(t, f, f.root, `crash at write-type call ${crashAt} (${round === 0 ? 'before it' : 'torn'}), round ${round}`);
    }
  }
});

test.serial('a plaintext path near PATH_MAX whose cipher path is longer (127-byte names take 192) is reached a component at a time, still confined', async (t) => {
  const f = fixture(t);
  const parts: string[] = [];
  // pjdfstest's dirgen_max: 127-byte names up to 4,095 bytes of path.
  for (let i = 0; (parts.length + 1) * 128 < 4095; i++) parts.push(String(i).padStart(127, 'p'));
  let rel = '';
  for (const part of parts) {
    rel = rel ? `${rel}/${part}` : part;
    await f.names.makeEntry(f.dir, path.join(f.root, f.names.toCipher(rel)), () => f.dir.at(f.names.toCipher(rel), (e) => fs.mkdirSync(e)));
  }
  t.true(Buffer.byteLength(f.names.toCipher(rel)) > 4096, 'the cipher path is longer than PATH_MAX');
  await makeFile(f, `${rel}/leaf`, 'deep');
  t.is(f.dir.lstat(f.names.toCipher(`${rel}/leaf`)).size, 4);
  t.deepEqual(listed(f, rel), ['leaf']);
  // A symlink swapped in for a directory halfway down is refused on the long path too.
  const mid = parts.slice(0, 10).join('/');
  const midCipher = path.join(f.root, f.names.toCipher(mid));
  fs.renameSync(midCipher, midCipher + '.moved');
  fs.symlinkSync(midCipher + '.moved', midCipher);
  t.throws(() => f.dir.lstat(f.names.toCipher(`${rel}/leaf`)), { name: 'UnsafePathError' });
  // fs.rmSync (the temp dir's teardown) cannot name paths this long; rm(1) walks with openat.
  for (const e of fs.readdirSync(f.root)) execFileSync('rm', ['-rf', '--', path.join(f.root, e)]);
});

test.serial('name text: any bytes round-trip; UTF-8 names are their own strings; only escaped bytes are not plain text', (t) => {
  const rng = new Rng(7);
  for (let i = 0; i < 5000; i++) {
    const b = rng.bytes(1 + rng.range(0, 40));
    if (i % 3 === 0) for (let j = 0; j < b.length; j++) b[j] &= 0x7f;
    t.true(nameBytes(nameText(b)).equals(b));
  }
  const utf8 = Buffer.from('tax-return ü 😀 \u{10FFFF}');
  t.is(nameText(utf8), utf8.toString('utf8'));
  t.true(isPlainText(nameText(utf8)));
  const bad = Buffer.from([0x61, 0xff, 0xed, 0xa0, 0x80, 0xc0, 0xaf, 0x62]);
  t.is(nameText(bad), 'a\udcff\udced\udca0\udc80\udcc0\udcaf' + 'b');
  t.false(isPlainText(nameText(bad)));
  // A lone surrogate that is not an escaped byte is written as node:fs would (U+FFFD).
  t.true(nameBytes('x\ud800').equals(Buffer.from('x\ufffd')));
  // Plain names refuse what node:fs cannot name; encrypted names seal the bytes.
  t.throws(() => new PlainNames().toCipher(nameText(bad)), { message: /not UTF-8/ });
  const enc = new EncryptedNames(nameKeys(MASTER));
  t.is(enc.toCipher(nameText(bad)), refEntryName(refEncryptName(refNameKeys(MASTER), bad)));
  enc.dispose();
});
