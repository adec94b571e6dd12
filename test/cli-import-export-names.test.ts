/**
 * `darefs import` and `darefs export` on a volume with encrypted names (FORMAT.md §8): a tree with
 * nested directories, empty files, symlinks, names of 15/16/17 bytes, long names (200 and 255
 * bytes, a file, a directory and a symlink), names that are not UTF-8 and a plaintext `.darefs`
 * round trips; the cipher directory holds no plaintext name (every entry opened independently
 * with node:crypto), every long entry has its `.name` file, written before the entry is linked;
 * reruns are incremental and put back a lost `.name`; export skips and reports forged names, a
 * long entry without (or with another's) `.name`. A volume with plain names refuses a name that
 * is not UTF-8, by entry, both ways.
 */
import test, { type ExecutionContext } from 'ava';
import { isUtf8 } from 'node:buffer';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { importCodec } from '../src/cli/cipher-tree';
import { copyTree } from '../src/cli/tree-copy';
import { cipherFromName, versionFromName } from '../src/dare';
import { openVolume, TEMP_PREFIX, type CipherDir, type NameScheme } from '../src/store';
import { runCli, tempDir, testBytes } from './helpers/cli';
import { LONG_ENTRY, refOpenName as openName, refVolumeNameKeys as volumeNameKeys, type RefNameKeys as TestNameKeys } from './helpers/names';

const PASS = 'encrypted names import export';
const MTIME = new Date('2011-02-03T04:05:06.000Z');

interface Vol {
  root: string;
  plain: string;
  cipher: string;
  pass: string;
}

async function volume(t: ExecutionContext, encryptNames: boolean): Promise<Vol> {
  const root = tempDir(t, 'darefs-ien-');
  const pass = path.join(root, 'pass');
  fs.writeFileSync(pass, `${PASS}\n`, { mode: 0o600 });
  const cipher = path.join(root, 'cipher');
  const init = await runCli(['init', '--passfile', pass, ...(encryptNames ? ['--encrypt-names'] : []), cipher]);
  t.is(init.code, 0, init.stderr);
  const plain = path.join(root, 'plain');
  fs.mkdirSync(plain);
  return { root, plain, cipher, pass };
}

/** A path of byte names below `root`, as node:fs takes it. */
function at(root: string, ...names: (Buffer | string)[]): Buffer {
  return Buffer.concat([Buffer.from(root), ...names.flatMap((n) => [Buffer.from('/'), Buffer.from(n)])]);
}

/** A name for messages and map keys: itself when UTF-8, else its bytes in hex. */
function show(name: Buffer): string {
  return isUtf8(name) ? name.toString() : `<hex ${name.toString('hex')}>`;
}

/**
 * Everything below `root` by byte names, keyed by shown path: "kind mode mtime(s) content" (a
 * symlink: no mode, its target in hex; a file: its SHA-256), so a difference shows in one line.
 */
function snapshot(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (dir: Buffer, key: string): void => {
    for (const name of fs.readdirSync(dir, { encoding: 'buffer' }).sort(Buffer.compare)) {
      const p = Buffer.concat([dir, Buffer.from('/'), name]);
      const k = key === '' ? show(name) : `${key}/${show(name)}`;
      const st = fs.lstatSync(p);
      const common = `${Math.floor(st.mtimeMs / 1000)}`;
      if (st.isSymbolicLink()) out.set(k, `symlink - ${common} ${fs.readlinkSync(p, { encoding: 'buffer' }).toString('hex')}`);
      else if (st.isDirectory()) {
        out.set(k, `dir ${(st.mode & 0o7777).toString(8)} ${common}`);
        walk(p, k);
      } else out.set(k, `file ${(st.mode & 0o7777).toString(8)} ${common} ${createHash('sha256').update(fs.readFileSync(p)).digest('hex')}`);
    }
  };
  walk(Buffer.from(root), '');
  return out;
}

interface CipherScan {
  /** Shown plaintext path -> cipher path relative to the cipher directory. */
  cipherOf: Map<string, string>;
  /** Every entry name, and every `.name` file's content. */
  stored: string[];
  longEntries: number;
}

/**
 * Opens every name of the cipher directory as FORMAT.md §8 says (node:crypto only): a short
 * entry is a cipher name, a long one names its `.name` sibling, which holds the full cipher name
 * whose SHA-256 it carries. Throws on anything else (a plaintext name among them too).
 */
function scanCipher(cipher: string, keys: TestNameKeys): CipherScan {
  const scan: CipherScan = { cipherOf: new Map(), stored: [], longEntries: 0 };
  const walk = (rel: string, key: string): void => {
    const names = fs.readdirSync(path.join(cipher, rel));
    for (const entry of names) {
      if (rel === '' && entry === '.darefs') continue;
      scan.stored.push(entry);
      if (entry.startsWith(TEMP_PREFIX)) throw new Error(`${rel}/${entry}: a temp file left over`);
      if (entry.endsWith('.name') && LONG_ENTRY.test(entry.slice(0, -5))) {
        if (!names.includes(entry.slice(0, -5))) throw new Error(`${rel}/${entry}: a .name file without its entry`);
        continue;
      }
      let full = entry;
      if (LONG_ENTRY.test(entry)) {
        const nameFile = path.join(cipher, rel, `${entry}.name`);
        if (!fs.existsSync(nameFile)) throw new Error(`${rel}/${entry}: long entry without its .name file`);
        full = fs.readFileSync(nameFile, 'latin1');
        scan.stored.push(full);
        scan.longEntries++;
        if (full.length <= 255) throw new Error(`${rel}/${entry}: its .name holds a name that fits one entry`);
        if (`dare1.long.${createHash('sha256').update(full, 'latin1').digest('base64url')}` !== entry) throw new Error(`${rel}/${entry}: .name holds another name`);
      } else if (entry.length > 255) throw new Error(`${rel}/${entry}: too long`);
      const plain = openName(keys, full);
      const r = rel === '' ? entry : `${rel}/${entry}`;
      const k = key === '' ? show(plain) : `${key}/${show(plain)}`;
      scan.cipherOf.set(k, r);
      if (fs.lstatSync(path.join(cipher, r)).isDirectory()) walk(r, k);
    }
  };
  walk('', '');
  return scan;
}

function summaryCounts(stderr: string): { copied: number; skipped: number; failed: number } {
  const m = /(\d+) files? copied, (\d+) skipped \(already complete\), (\d+) failed/.exec(stderr);
  if (!m) throw new Error(`no summary in: ${stderr}`);
  return { copied: Number(m[1]), skipped: Number(m[2]), failed: Number(m[3]) };
}

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

// Names around the 16-byte padding block, long ones (cipher name > 255 bytes from 160 bytes on),
// and bytes that are not UTF-8.
const N15 = 'fifteen-bytes-a';
const N16 = 'sixteen-bytes-ab';
const N17 = 'seventeen-bytes-a';
const LONG200 = 'd'.repeat(200);
const LONG255 = `${'é'.repeat(127)}x`;
const LONG_LINK = 'l'.repeat(180);
const ODD = Buffer.from([0x6f, 0x64, 0xff, 0xfe, 0x64]);
const ODD_DIR = Buffer.from([0x64, 0x69, 0x72, 0xe9]);

/** The tree of the round trip: files (name path -> size), symlinks, directories (mode). */
function makeNamesTree(root: string): { files: number; links: number; dirs: number } {
  const dirs: [(string | Buffer)[], number][] = [
    [['docs'], 0o750],
    [['docs', 'sub'], 0o755],
    [['docs', 'sub', 'deeper'], 0o700],
    [['empty-dir'], 0o755],
    [[LONG200], 0o755],
    [[ODD_DIR], 0o711],
    [['.darefs'], 0o755],
  ];
  const files: [(string | Buffer)[], number][] = [
    [['docs', 'report.pdf'], 70_000],
    [['docs', 'sub', 'deeper', 'x'], 3],
    [['empty'], 0],
    [[N15], 15],
    [[N16], 16],
    [[N17], 17],
    [[LONG200, 'inside'], 1000],
    [[LONG255], 5000],
    [[ODD], 100],
    [[ODD_DIR, 'in-odd'], 10],
    [['.darefs', 'own'], 5],
  ];
  const links: [(string | Buffer)[], Buffer][] = [
    [['link'], Buffer.from('docs/report.pdf')],
    [['docs', 'up'], Buffer.from('../empty')],
    [[LONG_LINK], Buffer.concat([Buffer.from('./'), ODD])],
  ];
  for (const [parts] of dirs) fs.mkdirSync(at(root, ...parts), { recursive: true });
  let seed = 1;
  for (const [parts, size] of files) {
    fs.writeFileSync(at(root, ...parts), testBytes(size, seed++), { mode: 0o640 });
    fs.utimesSync(at(root, ...parts), MTIME, MTIME);
  }
  for (const [parts, target] of links) {
    fs.symlinkSync(target, at(root, ...parts));
    fs.lutimesSync(at(root, ...parts), MTIME, MTIME);
  }
  for (const [parts, mode] of dirs.reverse()) {
    fs.chmodSync(at(root, ...parts), mode);
    fs.utimesSync(at(root, ...parts), MTIME, MTIME);
  }
  return { files: files.length, links: links.length, dirs: dirs.length };
}

test('encrypted names: import and export round trip; no plaintext name in the cipher directory; long names have their .name; reruns are incremental', async (t) => {
  t.timeout(120_000);
  t.deepEqual([N15, N16, N17].map((n) => Buffer.byteLength(n)), [15, 16, 17]);
  t.is(Buffer.byteLength(LONG255), 255);
  const v = await volume(t, true);
  const counts = makeNamesTree(v.plain);
  const src = snapshot(v.plain);

  const imp = await runCli(['import', '--passfile', v.pass, v.plain, v.cipher]);
  t.is(imp.code, 0, imp.stderr);
  t.deepEqual(summaryCounts(imp.stderr), { copied: counts.files, skipped: 0, failed: 0 });
  t.regex(imp.stderr, new RegExp(`${counts.links} symlinks, ${counts.dirs} directories`));
  t.false(imp.stderr.includes('is not imported'), 'a plaintext .darefs is an ordinary name with encrypted names');

  // Every name opens (independently) to exactly the plaintext tree's names, none is in clear.
  const keys = await volumeNameKeys(v.cipher, PASS);
  const scan = scanCipher(v.cipher, keys);
  t.deepEqual([...scan.cipherOf.keys()].sort(), [...src.keys()].sort());
  t.is(scan.longEntries, 3, 'LONG200 (a directory), LONG255 (a file) and LONG_LINK (a symlink) are long');
  const plainNames = [...src.keys()].flatMap((k) => k.split('/')).filter((n) => n.length >= 5);
  for (const stored of scan.stored) {
    for (const name of plainNames) t.false(stored.includes(name), `${name} appears in the cipher directory (${stored})`);
  }
  // Kinds, modes and times are those of the source, entry by entry.
  for (const [k, node] of src) {
    const st = fs.lstatSync(path.join(v.cipher, scan.cipherOf.get(k)!));
    const kind = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'file';
    const mode = kind === 'symlink' ? '-' : (st.mode & 0o7777).toString(8);
    t.is(`${kind} ${mode} ${Math.floor(st.mtimeMs / 1000)}`, node.split(' ').slice(0, 3).join(' '), `kind, mode and mtime of ${k}`);
  }

  const back = path.join(v.root, 'back');
  const exp = await runCli(['export', '--passfile', v.pass, v.cipher, back]);
  t.is(exp.code, 0, exp.stderr);
  t.deepEqual(summaryCounts(exp.stderr), { copied: counts.files, skipped: 0, failed: 0 });
  t.deepEqual(snapshot(back), src, 'names (also not UTF-8, and long), contents, modes, times and symlink targets');

  // A rerun skips everything, removes a temp file a killed run left, and puts back a lost .name.
  const docs = scan.cipherOf.get('docs')!;
  fs.writeFileSync(path.join(v.cipher, docs, `${TEMP_PREFIX}0123456789abcdef`), 'left by a killed run');
  const longFile = path.join(v.cipher, scan.cipherOf.get(LONG255)!);
  const nameFile = `${longFile}.name`;
  const nameBefore = fs.readFileSync(nameFile);
  fs.unlinkSync(nameFile);
  const again = await runCli(['import', '--passfile', v.pass, v.plain, v.cipher]);
  t.is(again.code, 0, again.stderr);
  t.deepEqual(summaryCounts(again.stderr), { copied: 0, skipped: counts.files, failed: 0 });
  t.true(fs.readFileSync(nameFile).equals(nameBefore), 'the .name of a kept long entry is written again');
  t.deepEqual([...scanCipher(v.cipher, keys).cipherOf].sort(), [...scan.cipherOf].sort(), 'same entries, no temp file left');

  // A changed file is copied again under the same cipher name; export copies just that one.
  fs.writeFileSync(at(v.plain, LONG255), 'changed');
  const changed = await runCli(['import', '--passfile', v.pass, '--quick', v.plain, v.cipher]);
  t.is(changed.code, 0, changed.stderr);
  t.deepEqual(summaryCounts(changed.stderr), { copied: 1, skipped: counts.files - 1, failed: 0 });
  t.deepEqual([...scanCipher(v.cipher, keys).cipherOf].sort(), [...scan.cipherOf].sort());
  const reexp = await runCli(['export', '--passfile', v.pass, v.cipher, back]);
  t.is(reexp.code, 0, reexp.stderr);
  t.deepEqual(summaryCounts(reexp.stderr), { copied: 1, skipped: counts.files - 1, failed: 0 });
  t.deepEqual(snapshot(back), snapshot(v.plain));
});

test('export with encrypted names: a forged name, a long entry without its .name or with another one, a forged directory are reported by cipher path and not exported (exit 6)', async (t) => {
  t.timeout(60_000);
  const v = await volume(t, true);
  const L1 = 'p'.repeat(200);
  const L2 = 'q'.repeat(200);
  for (const name of ['a', 'b', L1, L2]) fs.writeFileSync(path.join(v.plain, name), `content of ${name.slice(0, 3)}`);
  fs.mkdirSync(path.join(v.plain, 'dir'));
  fs.writeFileSync(path.join(v.plain, 'dir', 'c'), testBytes(100_000, 3));
  const imp = await runCli(['import', '--passfile', v.pass, v.plain, v.cipher]);
  t.is(imp.code, 0, imp.stderr);
  const keys = await volumeNameKeys(v.cipher, PASS);
  const { cipherOf } = scanCipher(v.cipher, keys);
  const c = (k: string): string => path.join(v.cipher, cipherOf.get(k)!);
  /** A real entry name with one character in its middle changed: canonical, but it does not authenticate. */
  const forge = (entry: string): string => {
    const i = Math.floor(entry.length / 2);
    return entry.slice(0, i) + (entry[i] === 'A' ? 'B' : 'A') + entry.slice(i + 1);
  };

  const forged = path.join(v.cipher, forge(cipherOf.get('a')!));
  fs.copyFileSync(c('a'), forged);
  const noName = path.join(v.cipher, `dare1.long.${'A'.repeat(43)}`);
  fs.copyFileSync(c('b'), noName);
  fs.copyFileSync(`${c(L2)}.name`, `${c(L1)}.name`);
  const forgedDir = path.join(v.cipher, forge(cipherOf.get('dir')!));
  fs.mkdirSync(forgedDir);
  fs.copyFileSync(c('dir/c'), path.join(forgedDir, cipherOf.get('dir/c')!.split('/')[1]));
  // darefs's own entries are no names at all: not exported, not reported.
  fs.writeFileSync(path.join(v.cipher, `dare1.long.${'B'.repeat(43)}.name`), 'an orphan');
  fs.writeFileSync(path.join(v.cipher, `${TEMP_PREFIX}00112233`), 'a temp file');
  // And a modified package in a file with a good name: named with its plaintext path too.
  const fd = fs.openSync(c('dir/c'), 'r+');
  fs.writeSync(fd, Buffer.from([0x55]), 0, 1, 32 + 65568 + 100);
  fs.closeSync(fd);

  const out = path.join(v.root, 'out');
  const r = await runCli(['export', '--passfile', v.pass, v.cipher, out]);
  t.is(r.code, 6, r.stderr);
  t.regex(r.stderr, new RegExp(`${escape(forged)}: cipher name "\\S+" does not authenticate`));
  t.regex(r.stderr, new RegExp(`${escape(noName)}: cipher name "\\S+" has no .name file beside it`));
  t.regex(r.stderr, new RegExp(`${escape(c(L1))}: cipher name "\\S+" has a .name file that holds another name`));
  t.regex(r.stderr, new RegExp(`${escape(forgedDir)}: cipher name "\\S+" does not authenticate`));
  t.regex(r.stderr, new RegExp(`authentication failed in package 1 of ${escape(c('dir/c'))}[^\n]* \\(dir/c in the plaintext view\\)\n`));
  t.false(r.stderr.includes('B'.repeat(43)) || r.stderr.includes(TEMP_PREFIX), r.stderr);
  t.deepEqual(summaryCounts(r.stderr), { copied: 3, skipped: 0, failed: 4 });
  t.regex(r.stderr, /1 other error \(directories, symlinks\)/);
  t.deepEqual(fs.readdirSync(out).sort(), ['a', 'b', 'dir', L2].sort(), 'only what authenticates');
  t.deepEqual(fs.readdirSync(path.join(out, 'dir')), []);
  t.is(fs.readFileSync(path.join(out, L2), 'utf8'), 'content of qqq');
});

test('plain names: a name that is not UTF-8 is a clear error for that entry, both ways; the rest is copied', async (t) => {
  const v = await volume(t, false);
  fs.writeFileSync(path.join(v.plain, 'ok'), 'fine');
  fs.writeFileSync(at(v.plain, ODD), 'odd');
  fs.mkdirSync(at(v.plain, ODD_DIR));
  fs.writeFileSync(at(v.plain, ODD_DIR, 'inside'), 'never imported');
  const imp = await runCli(['import', '--passfile', v.pass, v.plain, v.cipher]);
  t.is(imp.code, 1, imp.stderr);
  t.regex(imp.stderr, /"od\\udcff\\udcfed": a name that is not UTF-8 needs a volume with encrypted names \(darefs init --encrypt-names\)/);
  t.regex(imp.stderr, /"dir\\udce9": a name that is not UTF-8/);
  t.deepEqual(summaryCounts(imp.stderr), { copied: 1, skipped: 0, failed: 1 });
  t.regex(imp.stderr, /1 other error/);
  t.deepEqual(fs.readdirSync(v.cipher).sort(), ['.darefs', 'ok'], 'nothing made for them, under no other name');

  fs.writeFileSync(at(v.cipher, ODD), fs.readFileSync(path.join(v.cipher, 'ok')));
  const out = path.join(v.root, 'out');
  const exp = await runCli(['export', '--passfile', v.pass, v.cipher, out]);
  t.is(exp.code, 1, exp.stderr);
  t.regex(exp.stderr, /the name "od\\udcff\\udcfed" is not UTF-8: darefs cannot read it in a volume with plain names/);
  t.deepEqual(summaryCounts(exp.stderr), { copied: 1, skipped: 0, failed: 1 });
  t.deepEqual(fs.readdirSync(out), ['ok']);
});

test('import: the .name file of a long cipher name is written before its entry is linked', async (t) => {
  t.timeout(60_000);
  const v = await volume(t, true);
  fs.mkdirSync(path.join(v.plain, LONG200));
  fs.writeFileSync(path.join(v.plain, LONG200, LONG255), 'deep and long');
  fs.writeFileSync(path.join(v.plain, 'short'), 'short');
  fs.symlinkSync('short', path.join(v.plain, LONG_LINK));
  const opened = await openVolume({ cipherDir: v.cipher, mode: 'auto', secrets: { passphrase: Buffer.from(PASS) }, readOnly: true });
  try {
    const real = opened.volume.names;
    const root = opened.volume.dir.root;
    const lexists = (p: string): boolean => fs.lstatSync(p, { throwIfNoEntry: false }) !== undefined;
    const seen: { entry: string; linkedBefore: boolean; nameFileAfter: boolean }[] = [];
    // The volume's own scheme, watched: where the entry stood when the copy asked for its .name.
    // (Everything else is the real scheme's, through the prototype.)
    const watched: NameScheme = Object.assign(Object.create(real) as NameScheme, {
      dispose: () => undefined,
      beforeEntry(d: CipherDir, p: string) {
        const linkedBefore = lexists(p);
        real.beforeEntry(d, p);
        seen.push({ entry: path.relative(root, p), linkedBefore, nameFileAfter: lexists(`${p}.name`) });
      },
    });
    const config = opened.config!;
    const codec = importCodec({ opened, version: versionFromName(config.writeVersion), cipher: cipherFromName(config.cipher) });
    const run = (): ReturnType<typeof copyTree> =>
      copyTree({
        command: 'import',
        srcRoot: v.plain,
        dstRoot: v.cipher,
        codec,
        jobs: 2,
        quick: false,
        quiet: true,
        excludeAtRoot: new Set(),
        createRoot: false,
        dstDir: opened.volume.dir,
        names: watched,
      });
    const summary = await run();
    t.deepEqual(summary.failures, []);
    const keys = await volumeNameKeys(v.cipher, PASS);
    const longOnes = [...scanCipher(v.cipher, keys).cipherOf.values()].filter((r) => LONG_ENTRY.test(path.basename(r))).sort();
    t.is(longOnes.length, 3);
    for (const rel of longOnes) {
      const first = seen.find((s) => s.entry === rel);
      t.truthy(first, `${rel}: no .name asked for`);
      t.false(first!.linkedBefore, `${rel}: linked before its .name was written`);
      t.true(first!.nameFileAfter, `${rel}: no .name file once beforeEntry returned`);
    }
    // A rerun keeps every entry, and still sees each one's .name.
    seen.length = 0;
    const rerun = await run();
    t.deepEqual(rerun.failures, []);
    t.is(rerun.filesSkipped, 2);
    t.deepEqual(seen.filter((s) => LONG_ENTRY.test(path.basename(s.entry))).map((s) => s.entry).sort(), longOnes);
  } finally {
    opened.dispose();
  }
});
