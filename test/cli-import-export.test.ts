/**
 * `darefs import` and `darefs export`: a generated tree into a fresh volume and back (contents,
 * modes, times, symlinks), every cipher file checked with `darefs decrypt --volume`; an import
 * killed with SIGKILL part-way and resumed; a modified package failing one file of an export;
 * wrong password and nested directories refused before anything is written; a cipher
 * subdirectory swapped for a symlink to an outside directory mid-import never written through.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cipherSize, decodeSealedLink, openDecodedLink, SEALED_LINK_MARKER } from '../src/dare';
import { TEMP_PREFIX } from '../src/store';
import { childEnv, MAIN, runCli, tempDir, testBytes } from './helpers/cli';
import { volumeKeys } from './helpers/rw';

const PASS = 'import export passphrase';
const OLD = new Date('2003-04-05T06:07:08.250Z');
const OLDER = new Date('1999-12-31T23:59:58.500Z');

interface Vol {
  root: string;
  plain: string;
  cipher: string;
  pass: string;
}

/** A temp dir with a passfile and a fresh volume (`darefs init --passfile`). */
async function freshVolume(t: ExecutionContext, password = PASS): Promise<Vol> {
  const root = tempDir(t, 'darefs-ie-');
  const pass = path.join(root, 'pass');
  fs.writeFileSync(pass, `${password}\n`, { mode: 0o600 });
  const cipher = path.join(root, 'cipher');
  const init = await runCli(['init', '--passfile', pass, cipher]);
  t.is(init.code, 0, init.stderr);
  const plain = path.join(root, 'plain');
  fs.mkdirSync(plain);
  return { root, plain, cipher, pass };
}

interface Spec {
  files: Record<string, { size: number; mode: number }>;
  links: Record<string, string>;
  dirs: Record<string, number>;
}

const TREE: Spec = {
  files: {
    empty: { size: 0, mode: 0o600 },
    one: { size: 1, mode: 0o644 },
    'a/exact': { size: 65536, mode: 0o600 },
    'a/b/plus-one': { size: 65537, mode: 0o755 },
    'a/b/c/big': { size: 3 * 1024 * 1024 + 4321, mode: 0o640 },
    'space name.txt': { size: 100, mode: 0o600 },
  },
  links: { 'link-to-plus': 'a/b/plus-one', 'a/dangling': '../nowhere/at/all' },
  dirs: { a: 0o755, 'a/b': 0o750, 'a/b/c': 0o700, 'empty-dir': 0o755 },
};

function makeTree(root: string, spec: Spec): void {
  for (const d of Object.keys(spec.dirs)) fs.mkdirSync(path.join(root, d), { recursive: true });
  let seed = 1;
  for (const [rel, f] of Object.entries(spec.files)) {
    const p = path.join(root, rel);
    fs.writeFileSync(p, testBytes(f.size, seed++));
    fs.chmodSync(p, f.mode);
    fs.utimesSync(p, OLDER, OLD);
  }
  for (const [rel, target] of Object.entries(spec.links)) {
    fs.symlinkSync(target, path.join(root, rel));
    fs.lutimesSync(path.join(root, rel), OLDER, OLD);
  }
  // Deepest first: setting a child's times does not touch its parent's.
  for (const [rel, mode] of Object.entries(spec.dirs).sort((x, y) => y[0].length - x[0].length)) {
    fs.chmodSync(path.join(root, rel), mode);
    fs.utimesSync(path.join(root, rel), OLDER, OLD);
  }
}

interface Node {
  kind: 'file' | 'dir' | 'symlink';
  mode: number;
  mtimeS: number;
  /** SHA-256 of the content (tree comparisons stay cheap for big files). */
  sha?: string;
  target?: string;
}

/** Everything below `root` (not the root itself), skipping `.darefs` at the root. */
function snapshot(root: string): Map<string, Node> {
  const out = new Map<string, Node>();
  const walk = (rel: string): void => {
    for (const name of fs.readdirSync(path.join(root, rel)).sort()) {
      if (rel === '' && name === '.darefs') continue;
      const r = rel === '' ? name : `${rel}/${name}`;
      const p = path.join(root, r);
      const st = fs.lstatSync(p);
      const mtimeS = Math.floor(st.mtimeMs / 1000);
      if (st.isSymbolicLink()) out.set(r, { kind: 'symlink', mode: 0, mtimeS, target: fs.readlinkSync(p) });
      else if (st.isDirectory()) {
        out.set(r, { kind: 'dir', mode: st.mode & 0o7777, mtimeS });
        walk(r);
      } else out.set(r, { kind: 'file', mode: st.mode & 0o7777, mtimeS, sha: createHash('sha256').update(fs.readFileSync(p)).digest('hex') });
    }
  };
  walk('');
  return out;
}

function tempFilesUnder(root: string): string[] {
  const found: string[] = [];
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      if (e.name.startsWith(TEMP_PREFIX)) found.push(path.join(dir, e.name));
      if (e.isDirectory()) walk(path.join(dir, e.name));
    }
  };
  walk(root);
  return found;
}

function summaryCounts(stderr: string): { copied: number; skipped: number; failed: number } {
  const m = /(\d+) files? copied, (\d+) skipped \(already complete\), (\d+) failed/.exec(stderr);
  if (!m) throw new Error(`no summary in: ${stderr}`);
  return { copied: Number(m[1]), skipped: Number(m[2]), failed: Number(m[3]) };
}


/** A `darefs import -j 1` of `v` in the background: its stderr so far, and its exit code once it ends. */
function startImport(v: { pass: string; plain: string; cipher: string }): { child: ChildProcess; stderr: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [MAIN, 'import', '--passfile', v.pass, '-j', '1', v.plain, v.cipher], {
    env: childEnv(),
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, stderr: () => stderr, exited };
}

test('import a tree into a fresh volume, every file decrypts; export gives the identical tree back', async (t) => {
  t.timeout(60_000);
  const v = await freshVolume(t);
  makeTree(v.plain, TREE);
  const asRoot = process.getuid?.() === 0;
  if (asRoot) fs.lchownSync(path.join(v.plain, 'one'), 4242, 4243);
  const imp = await runCli(['import', '--passfile', v.pass, v.plain, v.cipher]);
  t.is(imp.code, 0, imp.stderr);
  t.deepEqual(summaryCounts(imp.stderr), { copied: 6, skipped: 0, failed: 0 });
  t.regex(imp.stderr, /2 symlinks, 4 directories/);
  t.false(imp.stderr.includes('\r'), 'no progress line when stderr is not a terminal');

  // The cipher tree: same names, sizes of DARE streams, the source's modes and times.
  const keyFor = await volumeKeys(v.cipher, PASS);
  const src = snapshot(v.plain);
  const enc = snapshot(v.cipher);
  t.deepEqual([...enc.keys()], [...src.keys()]);
  for (const [rel, s] of src) {
    const c = enc.get(rel)!;
    t.is(c.kind, s.kind, rel);
    t.is(c.mtimeS, s.mtimeS, `mtime of ${rel}`);
    if (s.kind === 'symlink') {
      // Sealed (FORMAT.md §7): not the target, but it opens to the target under the volume key.
      t.true(c.target!.startsWith(SEALED_LINK_MARKER) && !c.target!.includes(s.target!), `${rel} stored sealed`);
      const decoded = decodeSealedLink(Buffer.from(c.target!));
      t.is(openDecodedLink(decoded, keyFor(Buffer.from(decoded.prefix))).toString(), s.target!, `${rel} opens to its target`);
    } else t.is(c.mode, s.mode, `mode of ${rel}`);
    if (s.kind === 'file') {
      const plainBytes = fs.readFileSync(path.join(v.plain, rel));
      const cipherBytes = fs.readFileSync(path.join(v.cipher, rel));
      t.is(cipherBytes.length, cipherSize(plainBytes.length), `cipher size of ${rel}`);
      if (plainBytes.length > 0) t.is(cipherBytes[32], 0x10, `${rel} is a DARE 1.0 stream (the volume default)`);
      if (plainBytes.length >= 64) t.false(cipherBytes.includes(plainBytes.subarray(0, 64)), `${rel} is not stored in clear`);
    }
  }
  t.true(fs.existsSync(path.join(v.cipher, '.darefs', 'config.json')));
  t.deepEqual(tempFilesUnder(v.cipher), []);

  // Every cipher file decrypts with the volume key, as `darefs decrypt --volume` sees it.
  const decrypted = path.join(v.root, 'decrypted');
  fs.mkdirSync(decrypted);
  await Promise.all(
    Object.keys(TREE.files).map(async (rel, i) => {
      const out = path.join(decrypted, String(i));
      const d = await runCli(['decrypt', '--volume', v.cipher, '--passfile', v.pass, path.join(v.cipher, rel), out]);
      t.is(d.code, 0, `${rel}: ${d.stderr}`);
      t.true(fs.readFileSync(out).equals(fs.readFileSync(path.join(v.plain, rel))), `${rel} decrypts to its source`);
    }),
  );

  // Export back into a directory that does not exist yet.
  const back = path.join(v.root, 'back');
  const exp = await runCli(['export', '--passfile', v.pass, v.cipher, back]);
  t.is(exp.code, 0, exp.stderr);
  t.deepEqual(summaryCounts(exp.stderr), { copied: 6, skipped: 0, failed: 0 });
  t.deepEqual(snapshot(back), src, 'contents, modes, mtimes (to the second) and symlinks');
  t.false(fs.existsSync(path.join(back, '.darefs')), '.darefs is never exported');
  if (asRoot) {
    for (const p of [path.join(v.cipher, 'one'), path.join(back, 'one')]) {
      const st = fs.lstatSync(p);
      t.deepEqual([st.uid, st.gid], [4242, 4243], `owner of ${p} kept (running as root)`);
    }
  }
  t.deepEqual(tempFilesUnder(back), []);

  // Reruns skip what is complete and verified; a changed source file is copied again.
  const again = await runCli(['import', '--passfile', v.pass, v.plain, v.cipher]);
  t.is(again.code, 0, again.stderr);
  t.deepEqual(summaryCounts(again.stderr), { copied: 0, skipped: 6, failed: 0 });
  t.is(fs.readlinkSync(path.join(v.cipher, 'link-to-plus')), enc.get('link-to-plus')!.target!, 'a sealed link that holds its target is kept');
  fs.writeFileSync(path.join(v.plain, 'one'), 'X');
  const changed = await runCli(['import', '--passfile', v.pass, '--quick', v.plain, v.cipher]);
  t.is(changed.code, 0, changed.stderr);
  t.deepEqual(summaryCounts(changed.stderr), { copied: 1, skipped: 5, failed: 0 });
  const reexp = await runCli(['export', '--passfile', v.pass, v.cipher, back]);
  t.is(reexp.code, 0, reexp.stderr);
  t.deepEqual(summaryCounts(reexp.stderr), { copied: 1, skipped: 5, failed: 0 });
  t.is(fs.readFileSync(path.join(back, 'one'), 'utf8'), 'X');
});

test('an import killed with SIGKILL part-way resumes: finished files skipped, temp files removed', async (t) => {
  t.timeout(60_000);
  const v = await freshVolume(t);
  const small = Array.from({ length: 8 }, (_, i) => `f${i}`);
  for (const [i, name] of small.entries()) fs.writeFileSync(path.join(v.plain, name), testBytes(70_000 + i, i + 1));
  fs.mkdirSync(path.join(v.plain, 'sub'));
  fs.writeFileSync(path.join(v.plain, 'sub', 'tail'), 'after the big one');
  // Sorted last among the root's files, and big enough to be caught half-written.
  const big = path.join(v.plain, 'zz-big');
  const chunk = testBytes(1024 * 1024, 99);
  const fd = fs.openSync(big, 'w');
  for (let i = 0; i < 96; i++) fs.writeSync(fd, chunk);
  fs.closeSync(fd);

  const { child, stderr: errText, exited } = startImport(v);
  // Kill once the big file is being written under its temporary name.
  const deadline = Date.now() + 30_000;
  let killedMidway = false;
  while (Date.now() < deadline) {
    const temps = fs.readdirSync(v.cipher).filter((n) => n.startsWith(TEMP_PREFIX));
    const partial = temps.map((n) => fs.statSync(path.join(v.cipher, n), { throwIfNoEntry: false })?.size ?? 0);
    if (partial.some((size) => size > 1024 * 1024)) {
      child.kill('SIGKILL');
      killedMidway = true;
      break;
    }
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 5));
  }
  await exited;
  t.true(killedMidway, `import finished before it could be killed: ${errText()}`);

  // Half a set: the small files are there, the big one only as a temp file, never under its name.
  t.false(fs.existsSync(path.join(v.cipher, 'zz-big')), 'no half-written file under a real name');
  t.true(tempFilesUnder(v.cipher).length >= 1, 'the killed run left its temp file');
  const done = small.filter((n) => fs.existsSync(path.join(v.cipher, n)));
  t.is(done.length, small.length);
  // And an older leftover in a subdirectory.
  fs.mkdirSync(path.join(v.cipher, 'sub'), { recursive: true });
  fs.writeFileSync(path.join(v.cipher, 'sub', `${TEMP_PREFIX}0123456789abcdef`), 'garbage');

  const rerun = await runCli(['import', '--passfile', v.pass, v.plain, v.cipher]);
  t.is(rerun.code, 0, rerun.stderr);
  t.deepEqual(summaryCounts(rerun.stderr), { copied: 2, skipped: small.length, failed: 0 });
  t.deepEqual(tempFilesUnder(v.cipher), []);

  const back = path.join(v.root, 'back');
  const exp = await runCli(['export', '--passfile', v.pass, '-j', '2', v.cipher, back]);
  t.is(exp.code, 0, exp.stderr);
  t.deepEqual(snapshot(back), snapshot(v.plain));
});

test('export: a modified package fails that file (path and package named), the others are exported', async (t) => {
  const v = await freshVolume(t);
  fs.writeFileSync(path.join(v.plain, 'bad'), testBytes(200_000, 5));
  fs.mkdirSync(path.join(v.plain, 'd'));
  fs.writeFileSync(path.join(v.plain, 'd', 'good'), testBytes(100_000, 6));
  const imp = await runCli(['import', '--passfile', v.pass, v.plain, v.cipher]);
  t.is(imp.code, 0, imp.stderr);
  // Flip one ciphertext byte in package 1.
  const bad = path.join(v.cipher, 'bad');
  const fd = fs.openSync(bad, 'r+');
  const at = 32 + 65568 + 100;
  const b = Buffer.alloc(1);
  fs.readSync(fd, b, 0, 1, at);
  b[0] ^= 0x01;
  fs.writeSync(fd, b, 0, 1, at);
  fs.closeSync(fd);

  const out = path.join(v.root, 'out');
  const r = await runCli(['export', '--passfile', v.pass, v.cipher, out]);
  t.is(r.code, 6, r.stderr);
  t.regex(r.stderr, new RegExp(`authentication failed in package 1 of ${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
  t.deepEqual(summaryCounts(r.stderr), { copied: 1, skipped: 0, failed: 1 });
  t.false(fs.existsSync(path.join(out, 'bad')), 'no partial output for the failed file');
  t.deepEqual(tempFilesUnder(out), []);
  t.true(fs.readFileSync(path.join(out, 'd', 'good')).equals(testBytes(100_000, 6)));
});

test('export: a symlink planted in the cipher directory, or a sealed one modified, fails that entry (exit 6) and is never followed', async (t) => {
  const v = await freshVolume(t);
  fs.writeFileSync(path.join(v.plain, 'f'), 'content');
  fs.symlinkSync('f', path.join(v.plain, 'good'));
  fs.symlinkSync('f', path.join(v.plain, 'tampered'));
  const imp = await runCli(['import', '--passfile', v.pass, v.plain, v.cipher]);
  t.is(imp.code, 0, imp.stderr);
  // A directory outside the volume holding a real cipher file of this volume: following the
  // planted symlink would export it.
  const outside = path.join(v.root, 'outside');
  fs.mkdirSync(outside);
  fs.copyFileSync(path.join(v.cipher, 'f'), path.join(outside, 'stolen'));
  fs.symlinkSync(outside, path.join(v.cipher, 'Documents'));
  const tampered = path.join(v.cipher, 'tampered');
  const stored = fs.readlinkSync(tampered);
  const i = SEALED_LINK_MARKER.length + 60;
  fs.unlinkSync(tampered);
  fs.symlinkSync(stored.slice(0, i) + (stored[i] === 'A' ? 'B' : 'A') + stored.slice(i + 1), tampered);

  const out = path.join(v.root, 'out');
  const r = await runCli(['export', '--passfile', v.pass, v.cipher, out]);
  t.is(r.code, 6, r.stderr);
  t.regex(r.stderr, new RegExp(`symlink ${path.join(v.cipher, 'Documents').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: target is not sealed`));
  t.regex(r.stderr, /symlink \S+\/tampered: sealed target: authentication failed/);
  t.false(r.stderr.includes(`-> ${outside}`) || r.stderr.includes(`'${outside}'`), 'the stored target is not quoted');
  t.deepEqual(fs.readdirSync(out).sort(), ['f', 'good'], 'neither bad link exported, nothing from outside');
  t.is(fs.readlinkSync(path.join(out, 'good')), 'f');
  t.regex(r.stderr, /2 other errors/);
});

test('a wrong password exits 3 before anything is written', async (t) => {
  const v = await freshVolume(t);
  makeTree(v.plain, { files: { x: { size: 10, mode: 0o600 } }, links: {}, dirs: { sub: 0o755 } });
  const wrong = path.join(v.root, 'wrong');
  fs.writeFileSync(wrong, 'not the passphrase\n');
  const r = await runCli(['import', '--passfile', wrong, v.plain, v.cipher]);
  t.is(r.code, 3, r.stderr);
  t.regex(r.stderr, /wrong/);
  t.deepEqual(fs.readdirSync(v.cipher), ['.darefs']);

  const imp = await runCli(['import', '--passfile', v.pass, v.plain, v.cipher]);
  t.is(imp.code, 0, imp.stderr);
  const out = path.join(v.root, 'out');
  const e = await runCli(['export', '--passfile', wrong, v.cipher, out]);
  t.is(e.code, 3, e.stderr);
  t.false(fs.existsSync(out), 'PLAINDIR not even created');
});

test('PLAINDIR inside CIPHERDIR, or CIPHERDIR inside PLAINDIR, is refused (exit 2)', async (t) => {
  const v = await freshVolume(t);
  fs.mkdirSync(path.join(v.cipher, 'inner'));
  const inner = await runCli(['import', '--passfile', v.pass, path.join(v.cipher, 'inner'), v.cipher]);
  t.is(inner.code, 2, inner.stderr);
  t.regex(inner.stderr, /PLAINDIR \S+ is inside CIPHERDIR/);
  const exp = await runCli(['export', '--passfile', v.pass, v.cipher, path.join(v.cipher, 'out', 'deeper')]);
  t.is(exp.code, 2, exp.stderr);
  t.false(fs.existsSync(path.join(v.cipher, 'out')));
  const outer = await runCli(['export', '--passfile', v.pass, v.cipher, v.root]);
  t.is(outer.code, 2, outer.stderr);
  t.regex(outer.stderr, /CIPHERDIR \S+ is inside PLAINDIR/);
  const same = await runCli(['import', '--passfile', v.pass, v.cipher, v.cipher]);
  t.is(same.code, 2, same.stderr);
});

test('ncrypt mode: import into a plain directory, files decrypt with darefs decrypt --ncrypt, export back', async (t) => {
  t.timeout(60_000);
  const root = tempDir(t, 'darefs-ie-');
  const pass = path.join(root, 'pass');
  fs.writeFileSync(pass, 'ncrypt password\n');
  const plain = path.join(root, 'plain');
  const cipher = path.join(root, 'cipher');
  fs.mkdirSync(cipher);
  makeTree(plain, { files: { n1: { size: 70_000, mode: 0o600 }, 'd/n2': { size: 5, mode: 0o644 } }, links: {}, dirs: { d: 0o755 } });
  const noMode = await runCli(['import', '--passfile', pass, plain, cipher]);
  t.is(noMode.code, 7, 'without --ncrypt a directory without a config is not a volume');
  const imp = await runCli(['import', '--ncrypt', '--passfile', pass, plain, cipher]);
  t.is(imp.code, 0, imp.stderr);
  const out = path.join(root, 'n1');
  const d = await runCli(['decrypt', '--ncrypt', '--passfile', pass, path.join(cipher, 'n1'), out]);
  t.is(d.code, 0, d.stderr);
  t.true(fs.readFileSync(out).equals(fs.readFileSync(path.join(plain, 'n1'))));
  const back = path.join(root, 'back');
  const exp = await runCli(['export', '--ncrypt', '--passfile', pass, cipher, back]);
  t.is(exp.code, 0, exp.stderr);
  t.deepEqual(snapshot(back), snapshot(plain));
});

test('import: a cipher subdirectory swapped for a symlink to an outside directory during the run is never written through', async (t) => {
  t.timeout(120_000);
  const v = await freshVolume(t);
  const asRoot = process.getuid?.() === 0;
  // Many files in sub/, each written with two fsyncs, -j 1: the run is long after sub/ is made.
  const sub = path.join(v.plain, 'sub');
  fs.mkdirSync(sub);
  const names = Array.from({ length: 300 }, (_, i) => `f${String(i).padStart(3, '0')}`);
  for (const [i, name] of names.entries()) fs.writeFileSync(path.join(sub, name), testBytes(65536 + i, i + 1));
  // Sorted after every f*: written (on the code before the fix, over the outside file) last.
  fs.writeFileSync(path.join(sub, 'victim'), 'the plaintext that would replace it');
  fs.utimesSync(path.join(sub, 'victim'), OLDER, OLD);
  if (asRoot) for (const name of [...names, 'victim', '.']) fs.lchownSync(path.join(sub, name), 4242, 4243);
  fs.chmodSync(sub, 0o751);
  fs.utimesSync(sub, OLDER, OLD);

  // The directory the attacker points sub/ at, with a file of the same name as one of sub's.
  const outside = path.join(v.root, 'outside');
  fs.mkdirSync(outside, { mode: 0o700 });
  const victim = path.join(outside, 'victim');
  fs.writeFileSync(victim, 'precious', { mode: 0o600 });
  const past = new Date('2010-01-02T03:04:05.000Z');
  fs.utimesSync(victim, past, past);
  fs.utimesSync(outside, past, past);
  const meta = (p: string): unknown => {
    const st = fs.lstatSync(p);
    return { mode: st.mode, uid: st.uid, gid: st.gid, mtimeMs: st.mtimeMs, size: st.size };
  };
  const before = { outside: meta(outside), victim: meta(victim) };

  const { child, stderr: errText, exited } = startImport(v);
  // Swap once the import has written its first file into sub/: its checks of sub/ are done.
  const cipherSub = path.join(v.cipher, 'sub');
  const deadline = Date.now() + 60_000;
  let swappedMidway = false;
  while (Date.now() < deadline && child.exitCode === null) {
    if (fs.existsSync(path.join(cipherSub, names[0]))) {
      fs.renameSync(cipherSub, path.join(v.cipher, 'sub-moved'));
      fs.symlinkSync(outside, cipherSub);
      swappedMidway = child.exitCode === null;
      break;
    }
    await new Promise((r) => setImmediate(r));
  }
  const code = await exited;
  t.true(swappedMidway, `the import finished before sub/ could be swapped: ${errText()}`);
  const moved = fs.readdirSync(path.join(v.cipher, 'sub-moved')).filter((n) => !n.startsWith(TEMP_PREFIX));
  t.true(moved.length >= 1 && moved.length < names.length, `the swap came before most files were written (${moved.length} were)`);
  t.log(`${moved.length} of ${names.length + 1} files written before the swap; stderr starts: ${errText().split('\n').slice(0, 2).join(' | ')}`);

  t.deepEqual(fs.readdirSync(outside), ['victim'], 'nothing written into the outside directory');
  t.is(fs.readFileSync(victim, 'utf8'), 'precious', 'the outside file is not replaced');
  t.deepEqual({ outside: meta(outside), victim: meta(victim) }, before, 'no mode, owner or time changed outside');
  t.not(code, 0, errText());
  t.regex(errText(), /refused \(the cipher directory is not trusted\)/);
  // Step 4 (directory modes and times) found the symlink where it made sub/, and did not chmod through it.
  t.regex(errText(), new RegExp(`${cipherSub.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is no longer a directory`));
  t.regex(errText(), new RegExp(`${path.join(v.plain, 'sub', 'victim').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `), 'the files not imported are named');
  const counts = summaryCounts(errText());
  t.is(counts.copied + counts.failed, names.length + 1);
  t.true(counts.failed >= names.length + 1 - moved.length, errText());
});

test('export: a 0-byte cipher file is an empty file (created, never written, or a crash before its first checkpoint); 1-31 bytes fail that file', async (t) => {
  const v = await freshVolume(t);
  fs.writeFileSync(path.join(v.plain, 'real'), testBytes(1000, 7));
  const imp = await runCli(['import', '--passfile', v.pass, v.plain, v.cipher]);
  t.is(imp.code, 0, imp.stderr);
  fs.writeFileSync(path.join(v.cipher, 'zero'), Buffer.alloc(0));
  fs.writeFileSync(path.join(v.cipher, 'short'), Buffer.alloc(7));
  const out = path.join(v.root, 'out');
  const r = await runCli(['export', '--passfile', v.pass, v.cipher, out]);
  t.is(r.code, 4, r.stderr); // not a DARE file (exit 4), as the export CLI reports a malformed file
  t.deepEqual(summaryCounts(r.stderr), { copied: 2, skipped: 0, failed: 1 });
  t.is(fs.readFileSync(path.join(out, 'zero')).length, 0);
  t.false(fs.existsSync(path.join(out, 'short')));
  t.regex(r.stderr, /short/);
  t.true(fs.readFileSync(path.join(out, 'real')).equals(testBytes(1000, 7)));
});
