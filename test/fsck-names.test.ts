/**
 * `darefs fsck` and `darefs ls` on volumes with encrypted names (FORMAT.md §8): every name is
 * opened; entries whose names do not authenticate (a flipped character, a forged entry, a long
 * name whose `.name` file is missing, swapped or forged) are reported by cipher path and the
 * plaintext path of their directory; an orphan `.name` file (a crash between writing it and
 * linking the entry) is information, and `fsck --repair` removes it and nothing else. `ls` maps
 * plaintext paths to cipher entries and never writes. Plain-names volumes keep their output.
 */
import test, { ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { MAX_PAYLOAD, PREFIX_SIZE, HEADER_SIZE, longEntryName } from '../src/dare';
import { visibleName } from '../src/cli/name-display';
import { CONFIG_DIR } from '../src/keys';
import { TEMP_PREFIX } from '../src/store';
import { CLI, passfile } from './helpers/darefs';
import { MountDirs, assertNoFuseMountsLeft, cleanupLeftovers, makeTestDirs, withMount } from './helpers/mount';
import { NamedVolumeWriter, fillVolume, initNamedVolume } from './helpers/named-volume';
import { RunResult, initMasterVolume, masterMount, run, sha256, stopCleanly } from './helpers/rw';

test.after.always(async () => {
  await cleanupLeftovers();
  await assertNoFuseMountsLeft();
});

/** 201 bytes: its cipher name is longer than 255 bytes, so it is a long name. */
const LONG = `report-${'x'.repeat(190)}.pdf`;
const LONG2 = `${'y'.repeat(180)}.txt`;
const LONGDIR = `${'d'.repeat(200)}`;
/** A control character and a byte that is not UTF-8 (name-text.ts carries byte 0xff as U+DCFF). */
const ODD = 'odd\u0001\udcff';
const ODD_SHOWN = 'odd\\x01\\xff';

function fsck(dirs: MountDirs, ...args: string[]): Promise<RunResult> {
  return run(process.execPath, [CLI, 'fsck', '--passfile', passfile(dirs), ...args, dirs.cipherDir], { timeoutMs: 60_000 });
}

function ls(dirs: MountDirs, ...args: string[]): Promise<RunResult> {
  return run(process.execPath, [CLI, 'ls', '--volume', dirs.cipherDir, '--passfile', passfile(dirs), ...args], { timeoutMs: 60_000 });
}

interface NameJson {
  path: string;
  dir: string;
  plainDir?: string;
  type: string;
  status: string;
  message: string;
  removed?: boolean;
}

interface FsckJson {
  clean: boolean;
  counts: { files: number; ok: number; bad: number };
  files: Array<{ path: string; plainPath?: string; status: string; problems: Array<{ index: number }> }>;
  names?: { checked: number; refused: number; orphans: number; entries: NameJson[] };
}

async function fsckJson(dirs: MountDirs, ...args: string[]): Promise<{ code: number | null; report: FsckJson }> {
  const res = await fsck(dirs, '--json', ...args);
  if (!res.stdout.startsWith('{')) throw new Error(`fsck --json printed no JSON (exit ${String(res.code)}): ${res.stdout}${res.stderr}`);
  return { code: res.code, report: JSON.parse(res.stdout) as FsckJson };
}

async function testDirs(t: ExecutionContext): Promise<MountDirs> {
  const dirs = await makeTestDirs();
  t.teardown(() => fsp.rm(dirs.root, { recursive: true, force: true }));
  return dirs;
}

/** The cipher paths of the small tree's plaintext paths. */
type CipherOf = (plain: string) => string;

/**
 * root: docs/, LONG, LONG2; docs: a.txt, link -> a.txt, sub/; docs/sub: ODD, LONGDIR/;
 * docs/sub/LONGDIR: inner.txt
 */
async function smallTree(dirs: MountDirs): Promise<CipherOf> {
  await initNamedVolume(dirs);
  let cipherOf: CipherOf | undefined;
  await fillVolume(dirs, async (w: NamedVolumeWriter) => {
    w.mkdir('docs');
    w.mkdir('docs/sub');
    w.mkdir(`docs/sub/${LONGDIR}`);
    await w.writeFile('docs/a.txt', 'alpha');
    await w.symlink('docs/link', 'a.txt');
    await w.writeFile(LONG, randomBytes(MAX_PAYLOAD + 100));
    await w.writeFile(LONG2, 'second long name');
    await w.writeFile(`docs/sub/${ODD}`, 'odd name');
    await w.writeFile(`docs/sub/${LONGDIR}/inner.txt`, 'inner');
    const map = new Map<string, string>();
    for (const p of ['docs', 'docs/sub', `docs/sub/${LONGDIR}`, 'docs/a.txt', 'docs/link', LONG, LONG2, `docs/sub/${ODD}`, `docs/sub/${LONGDIR}/inner.txt`]) map.set(p, w.cipherPath(p));
    cipherOf = (p) => {
      const c = map.get(p);
      if (c === undefined) throw new Error(`no cipher path recorded for ${p}`);
      return c;
    };
  });
  return cipherOf!;
}

const base = (p: string): string => path.basename(p);
const re = (s: string): string => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

/** Every entry under `root` with its type, size, mtime and content (or target): to see that nothing changed. */
function snapshot(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (rel: string): void => {
    for (const d of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const r = rel === '' ? d.name : `${rel}/${d.name}`;
      const full = path.join(root, r);
      const st = fs.lstatSync(full);
      const what = d.isDirectory() ? 'dir' : d.isSymbolicLink() ? `link ${fs.readlinkSync(full)}` : `file ${sha256(fs.readFileSync(full))}`;
      out.set(r, `${what} ${st.size} ${st.mtimeMs} ${st.mode}`);
      if (d.isDirectory()) walk(r);
    }
  };
  walk('');
  return out;
}

// ---------------------------------------------------------------------------------------------

test('visibleName escapes what a terminal would not show as itself, unambiguously', (t) => {
  t.is(visibleName('plain name.txt'), 'plain name.txt');
  t.is(visibleName('tab\there\nnl\r'), 'tab\\there\\nnl\\r');
  t.is(visibleName('esc\u001b[2J del\u007f'), 'esc\\x1b[2J del\\x7f');
  t.is(visibleName('back\\slash'), 'back\\\\slash');
  t.is(visibleName(ODD), ODD_SHOWN, 'a byte that is not UTF-8 shows as the byte');
  t.is(visibleName('c1\u0085 bidi\u202e rlo'), 'c1\\u0085 bidi\\u202e rlo');
  t.is(visibleName('ünïcødé 日本 😀'), 'ünïcødé 日本 😀', 'printable Unicode stays');
  t.is(visibleName('\\x41'), '\\\\x41', 'a literal backslash-x is not an escape');
});

test.serial('a volume written through the mount (long name, nested dir, odd name): fsck finds all well; ls lists what the mount lists', async (t) => {
  t.timeout(120_000);
  const oddBytes = Buffer.concat([Buffer.from('odd'), Buffer.from([0x01, 0xff])]);
  await withMount(
    t,
    masterMount(),
    async (m) => {
      const mp = m.mountpoint;
      await fsp.mkdir(path.join(mp, 'docs', 'sub'), { recursive: true });
      await fsp.writeFile(path.join(mp, 'docs', 'a.txt'), 'alpha');
      await fsp.writeFile(path.join(mp, LONG), randomBytes(2 * MAX_PAYLOAD + 3));
      // A name that is not UTF-8 can only be given as bytes.
      await fsp.writeFile(Buffer.concat([Buffer.from(path.join(mp, 'docs', 'sub') + '/'), oddBytes]), 'odd');
      await fsp.symlink('a.txt', path.join(mp, 'docs', 'link'));
      const rootNames = (await fsp.readdir(mp)).sort();
      const docsNames = (await fsp.readdir(path.join(mp, 'docs'))).sort();
      await stopCleanly(t, m);

      t.false(fs.readdirSync(m.cipherDir).includes('docs'), 'the cipher directory shows no plaintext name');
      const { code, report } = await fsckJson(m);
      t.is(code, 0);
      t.true(report.clean);
      t.like(report.names, { checked: 6, refused: 0, orphans: 0, entries: [] });
      t.deepEqual(report.files.map((f) => [f.plainPath, f.status]), [
        ['docs/a.txt', 'ok'],
        ['docs/link', 'ok'],
        [`docs/sub/${'odd\u0001\udcff'}`, 'ok'],
        [LONG, 'ok'],
      ]);
      const text = await fsck(m);
      t.is(text.code, 0, text.stdout + text.stderr);
      t.regex(text.stdout, /^checked 3 files \(5 packages, .*\) and 1 symlink: 4 ok; 6 names authenticate$/m);

      const root = await ls(m);
      t.is(root.code, 0, root.stderr);
      const lines = root.stdout.trimEnd().split('\n');
      t.deepEqual(lines.map((l) => l.split('\t')[1]), rootNames.map((n) => (n === 'docs' ? 'docs/' : n)), 'the names the mount lists, sorted');
      for (const l of lines) t.true(fs.existsSync(path.join(m.cipherDir, l.split('\t')[0])), `${l.slice(0, 60)}: a real cipher entry`);
      t.true(lines.some((l) => l.startsWith('dare1.long.') && l.endsWith(`\t${LONG}`)), 'the long name beside its long entry');
      const docs = await ls(m, 'docs');
      t.deepEqual(docs.stdout.trimEnd().split('\n').map((l) => l.split('\t')[1]), docsNames.map((n) => (n === 'sub' ? 'sub/' : n)));
      const sub = await ls(m, '-R', 'docs/sub');
      t.regex(sub.stdout, new RegExp(`^docs/sub:\\n[A-Za-z0-9_-]+\\t${re(ODD_SHOWN)}\\n$`));
    },
    { setup: initNamedVolume },
  );
});

test.serial('fsck: a clean volume made through the store passes, every file named by plaintext and cipher path', async (t) => {
  const dirs = await testDirs(t);
  const c = await smallTree(dirs);
  const { code, report } = await fsckJson(dirs);
  t.is(code, 0);
  t.true(report.clean);
  t.like(report.names, { checked: 9, refused: 0, orphans: 0, entries: [] });
  t.deepEqual(
    report.files.map((f) => [f.plainPath, f.path, f.status]),
    ['docs/a.txt', 'docs/link', `docs/sub/${LONGDIR}/inner.txt`, `docs/sub/${ODD}`, LONG, LONG2].map((p) => [p, c(p), 'ok']),
  );
  // A long name's .name file is darefs's own: not a file to check, nor a problem.
  t.true(fs.existsSync(path.join(dirs.cipherDir, `${c(LONG)}.name`)));
  t.false(report.files.some((f) => f.path.endsWith('.name')));
});

test.serial('fsck and ls: a flipped character in a cipher name is reported by cipher path and plaintext directory; the file is still checked', async (t) => {
  const dirs = await testDirs(t);
  const c = await smallTree(dirs);
  const good = c('docs/a.txt');
  const name = base(good);
  const i = 20;
  const flippedName = name.slice(0, i) + (name[i] === 'A' ? 'B' : 'A') + name.slice(i + 1);
  const flipped = `${c('docs')}/${flippedName}`;
  fs.renameSync(path.join(dirs.cipherDir, good), path.join(dirs.cipherDir, flipped));

  const { code, report } = await fsckJson(dirs);
  t.is(code, 6, 'a name that does not authenticate is damage');
  t.false(report.clean);
  t.like(report.names, { refused: 1, orphans: 0 });
  t.like(report.names?.entries, [{ path: flipped, dir: c('docs'), plainDir: 'docs', type: 'file', status: 'unauthenticated' }]);
  t.regex(report.names!.entries[0].message, /does not authenticate .*the mount does not list it/);
  const file = report.files.find((f) => f.path === flipped);
  t.like(file, { status: 'ok' }, 'its content still checked');
  t.is(file?.plainPath, undefined, 'it has no plaintext path');

  const text = await fsck(dirs);
  t.is(text.code, 6);
  t.regex(text.stdout, new RegExp(`^${re(flipped)} \\(file in docs\\): BAD NAME: cipher name does not authenticate`, 'm'));
  t.regex(text.stdout, /; 8 names authenticate, 1 does not$/m);
  t.regex(text.stderr, /1 name does not authenticate \(listed above\)/);

  const listed = await ls(dirs, 'docs');
  t.is(listed.code, 6);
  t.regex(listed.stdout, new RegExp(`^${re(flippedName)}\\t!refused\\tdoes not authenticate \\(forged, damaged, or another volume's\\)$`, 'm'));
  t.regex(listed.stdout, new RegExp(`^${re(base(c('docs/sub')))}\\tsub/$`, 'm'), 'the other entries are listed');
  t.regex(listed.stderr, /1 entry has a name that does not authenticate \(marked !refused above/);
  const gone = await ls(dirs, 'docs/a.txt');
  t.is(gone.code, 1);
  t.regex(gone.stderr, /docs\/a\.txt: no such file or directory in /);
});

test.serial('fsck: a directory whose name does not authenticate: its files are checked all the same, named by cipher path', async (t) => {
  const dirs = await testDirs(t);
  const c = await smallTree(dirs);
  const sub = c('docs/sub');
  const forged = `${c('docs')}/${randomBytes(32).toString('base64url')}`;
  fs.renameSync(path.join(dirs.cipherDir, sub), path.join(dirs.cipherDir, forged));
  const inner = `${forged}/${base(c(`docs/sub/${LONGDIR}`))}/${base(c(`docs/sub/${LONGDIR}/inner.txt`))}`;
  // Damage inner.txt's only package: its tag.
  const raw = fs.readFileSync(path.join(dirs.cipherDir, inner));
  raw[raw.length - 1] ^= 1;
  fs.writeFileSync(path.join(dirs.cipherDir, inner), raw);
  // And an orphan inside: its directory has no plaintext path.
  fs.writeFileSync(path.join(dirs.cipherDir, forged, `${longEntryName('x'.repeat(300))}.name`), 'x'.repeat(300));

  const { code, report } = await fsckJson(dirs);
  t.is(code, 6);
  t.like(report.names?.entries.find((e) => e.status === 'unauthenticated'), { path: forged, plainDir: 'docs', type: 'directory' });
  const orphan = report.names?.entries.find((e) => e.status === 'orphan');
  t.like(orphan, { dir: forged });
  t.false('plainDir' in orphan!, 'no plaintext path for a directory whose name does not authenticate');
  const damaged = report.files.find((f) => f.path === inner);
  t.like(damaged, { status: 'damaged' });
  t.false('plainPath' in damaged!);
  const text = await fsck(dirs);
  t.regex(text.stdout, new RegExp(`^${re(inner)} \\(cipher path; no plaintext path: .*\\): DAMAGED: 1 of 1 package failed`, 'm'));
  t.regex(text.stdout, new RegExp(`^${re(orphan!.path)} \\(file in a directory with no plaintext path\\): ORPHAN \\.name FILE \\(information\\)`, 'm'));
  t.regex(text.stdout, new RegExp(`^${re(forged)} \\(directory in docs\\): BAD NAME: `, 'm'));
});

test.serial('fsck and ls: .name files swapped between two long entries, a missing .name, a forged long name: each reported', async (t) => {
  const dirs = await testDirs(t);
  const c = await smallTree(dirs);
  const at = (p: string): string => path.join(dirs.cipherDir, p);
  // Swapped: each long entry's .name holds the other's full name (a valid one, of another entry).
  const one = fs.readFileSync(at(`${c(LONG)}.name`));
  fs.writeFileSync(at(`${c(LONG)}.name`), fs.readFileSync(at(`${c(LONG2)}.name`)));
  fs.writeFileSync(at(`${c(LONG2)}.name`), one);
  // Missing: the long-named directory's .name file is gone.
  const longDir = c(`docs/sub/${LONGDIR}`);
  fs.unlinkSync(at(`${longDir}.name`));
  // Forged: a full name of the right shape whose hash names the entry, but not sealed by this volume.
  const full = randomBytes(16 + 224).toString('base64url');
  const forged = `${c('docs')}/${longEntryName(full)}`;
  fs.writeFileSync(at(forged), fs.readFileSync(at(c('docs/a.txt'))));
  fs.writeFileSync(at(`${forged}.name`), full);

  const { code, report } = await fsckJson(dirs);
  t.is(code, 6);
  const by = new Map(report.names!.entries.map((e) => [e.path, e]));
  t.is(report.names!.refused, 4);
  t.is(report.names!.orphans, 0, 'a .name file beside its entry is not an orphan, whatever it holds');
  for (const p of [c(LONG), c(LONG2)]) {
    t.like(by.get(p), { status: 'long-name', dir: '', plainDir: '', type: 'file' });
    t.regex(by.get(p)!.message, /long name: has a \.name file that holds another name/);
  }
  t.like(by.get(longDir), { status: 'long-name', plainDir: 'docs/sub', type: 'directory' });
  t.regex(by.get(longDir)!.message, /long name: has no \.name file beside it/);
  t.like(by.get(forged), { status: 'long-name', plainDir: 'docs', type: 'file' });
  t.regex(by.get(forged)!.message, /long name: does not authenticate/);
  // The directory's content is still reached and checked.
  t.like(report.files.find((f) => f.path === c(`docs/sub/${LONGDIR}/inner.txt`)), { status: 'ok' });

  const text = await fsck(dirs);
  t.regex(text.stdout, new RegExp(`^${re(c(LONG))} \\(file in the root\\): BAD LONG NAME: long name: has a \\.name file that holds another name`, 'm'));
  t.regex(text.stdout, new RegExp(`^${re(longDir)} \\(directory in docs/sub\\): BAD LONG NAME: long name: has no \\.name file beside it`, 'm'));

  const root = await ls(dirs);
  t.is(root.code, 6);
  t.deepEqual(root.stdout.trimEnd().split('\n').sort(), [
    `${base(c('docs'))}\tdocs/`,
    `${c(LONG)}\t!refused\thas a .name file that holds another name`,
    `${c(LONG2)}\t!refused\thas a .name file that holds another name`,
  ].sort());
  t.regex(root.stderr, /2 entries have names that do not authenticate/);
  // Through a long-named directory whose name is refused: the path cannot be followed.
  const through = await ls(dirs, `docs/sub/${LONGDIR}`);
  t.is(through.code, 6);
  t.regex(through.stdout, new RegExp(`^${re(base(longDir))}\\t!refused\\thas no \\.name file beside it$`, 'm'));
  const below = await ls(dirs, `docs/sub/${LONGDIR}/inner.txt`);
  t.is(below.code, 6);
  t.regex(below.stderr, /its name does not authenticate: has no \.name file beside it/);
});

test.serial('fsck: an orphan .name file is information; --repair removes it, never following a symlink, and nothing else', async (t) => {
  const dirs = await testDirs(t);
  const c = await smallTree(dirs);
  // What a crash between writing the .name file and linking the entry leaves: the .name file of
  // an entry that was never made.
  let orphan = '';
  await fillVolume(dirs, async (w) => {
    const rel = w.cipherPath(`docs/${'n'.repeat(190)}`);
    w.names.beforeEntry(w.opened.volume.dir, rel);
    orphan = `${rel}.name`;
  });
  t.true(fs.existsSync(path.join(dirs.cipherDir, orphan)));
  // Planted: an orphan .name that is a symlink to a file outside, one that is a directory.
  const outside = path.join(dirs.root, 'outside.txt');
  fs.writeFileSync(outside, 'keep me');
  const linkOrphan = `${longEntryName('l'.repeat(300))}.name`;
  fs.symlinkSync(outside, path.join(dirs.cipherDir, linkOrphan));
  const dirOrphan = `${c('docs/sub')}/${longEntryName('m'.repeat(300))}.name`;
  fs.mkdirSync(path.join(dirs.cipherDir, dirOrphan));

  const before = snapshot(dirs.cipherDir);
  const { code, report } = await fsckJson(dirs);
  t.is(code, 0, 'information, not a problem');
  t.true(report.clean);
  t.like(report.names, { refused: 0, orphans: 3 });
  const by = new Map(report.names!.entries.map((e) => [e.path, e]));
  t.like(by.get(orphan), { status: 'orphan', dir: c('docs'), plainDir: 'docs', type: 'file' });
  t.like(by.get(linkOrphan), { status: 'orphan', plainDir: '', type: 'symlink' });
  t.like(by.get(dirOrphan), { status: 'orphan', plainDir: 'docs/sub', type: 'directory' });
  const text = await fsck(dirs);
  t.is(text.code, 0);
  t.regex(text.stdout, new RegExp(`^${re(orphan)} \\(file in docs\\): ORPHAN \\.name FILE \\(information\\): no entry beside it .*; --repair removes it$`, 'm'));
  t.regex(text.stdout, /; 9 names authenticate; 3 orphan \.name files$/m);
  t.deepEqual(snapshot(dirs.cipherDir), before, 'fsck without --repair changes nothing');

  const repaired = await fsckJson(dirs, '--repair');
  t.is(repaired.code, 0);
  const rby = new Map(repaired.report.names!.entries.map((e) => [e.path, e]));
  t.true(rby.get(orphan)?.removed);
  t.true(rby.get(linkOrphan)?.removed);
  t.falsy(rby.get(dirOrphan)?.removed);
  t.regex(rby.get(dirOrphan)!.message, /not removed: it is a directory/);
  t.is(fs.readFileSync(outside, 'utf8'), 'keep me', 'the symlink went, not what it points to');
  const after = snapshot(dirs.cipherDir);
  const expected = new Map(before);
  expected.delete(orphan);
  expected.delete(linkOrphan);
  // The directory that held one changed (an entry fewer), and --repair replays the journal (its
  // own file in .darefs/); everything else is as it was.
  for (const k of [...expected.keys(), ...after.keys()]) {
    if (k === c('docs') || k === CONFIG_DIR || k.startsWith(`${CONFIG_DIR}/`)) {
      expected.delete(k);
      after.delete(k);
    }
  }
  t.deepEqual(after, expected, 'only the orphans went');
  const again = await fsckJson(dirs);
  t.is(again.code, 0);
  t.deepEqual(again.report.names!.entries.map((e) => e.path), [dirOrphan]);
  const text2 = await fsck(dirs, '--repair');
  t.regex(text2.stdout, /; 9 names authenticate; 1 orphan \.name file$/m);
});

test.serial('fsck: content problems and temporary files on an encrypted-names volume are named by plaintext path and cipher path', async (t) => {
  const dirs = await testDirs(t);
  const c = await smallTree(dirs);
  const a = c('docs/a.txt');
  const raw = fs.readFileSync(path.join(dirs.cipherDir, a));
  raw[PREFIX_SIZE + HEADER_SIZE] ^= 0x40;
  fs.writeFileSync(path.join(dirs.cipherDir, a), raw);
  const odd = c(`docs/sub/${ODD}`);
  fs.truncateSync(path.join(dirs.cipherDir, odd), 7);
  const temp = `${c('docs')}/${TEMP_PREFIX}0123abcd`;
  fs.writeFileSync(path.join(dirs.cipherDir, temp), randomBytes(40));

  const { code, report } = await fsckJson(dirs);
  t.is(code, 6);
  t.like(report.files.find((f) => f.path === a), { plainPath: 'docs/a.txt', status: 'damaged' });
  t.like(report.files.find((f) => f.path === odd), { plainPath: `docs/sub/${ODD}`, status: 'short' });
  t.like(report.files.find((f) => f.path === temp), { status: 'temp' });
  t.is(report.names?.refused, 0, 'a temporary file is not a name problem');
  const text = await fsck(dirs);
  t.regex(text.stdout, new RegExp(`^docs/a\\.txt \\(cipher ${re(a)}\\): DAMAGED: 1 of 1 package failed: package 0`, 'm'));
  t.regex(text.stdout, new RegExp(`^docs/sub/${re(ODD_SHOWN)} \\(cipher ${re(odd)}\\): TOO SHORT: `, 'm'), 'an odd plaintext name is escaped');
  t.regex(text.stdout, new RegExp(`^${re(temp)} \\(cipher path; .*\\): TEMPORARY FILE: `, 'm'));
});

test.serial('ls: the small tree, -R, a PLAINPATH file or directory, a long-named directory on the way; it writes nothing', async (t) => {
  const dirs = await testDirs(t);
  const c = await smallTree(dirs);
  const line = (p: string, shown: string, dir = false): string => `${base(c(p))}\t${shown}${dir ? '/' : ''}`;
  const before = snapshot(dirs.cipherDir);

  const root = await ls(dirs);
  t.is(root.code, 0, root.stderr);
  t.is(root.stdout, [line('docs', 'docs', true), line(LONG, LONG), line(LONG2, LONG2)].join('\n') + '\n');

  const all = await ls(dirs, '-R');
  t.is(all.code, 0, all.stderr);
  t.is(
    all.stdout,
    [
      '.:',
      line('docs', 'docs', true),
      line(LONG, LONG),
      line(LONG2, LONG2),
      '',
      'docs:',
      line('docs/a.txt', 'a.txt'),
      line('docs/link', 'link'),
      line('docs/sub', 'sub', true),
      '',
      'docs/sub:',
      line(`docs/sub/${LONGDIR}`, LONGDIR, true),
      line(`docs/sub/${ODD}`, ODD_SHOWN),
      '',
      `docs/sub/${LONGDIR}:`,
      line(`docs/sub/${LONGDIR}/inner.txt`, 'inner.txt'),
    ].join('\n') + '\n',
  );
  t.true(base(c(`docs/sub/${LONGDIR}`)).startsWith('dare1.long.'));

  const file = await ls(dirs, 'docs/a.txt');
  t.is(file.stdout, line('docs/a.txt', 'a.txt') + '\n', 'a file: its one entry');
  t.is((await ls(dirs, '-R', `/docs/sub/${LONGDIR}/inner.txt`)).stdout, line(`docs/sub/${LONGDIR}/inner.txt`, 'inner.txt') + '\n');
  t.is((await ls(dirs, './docs//sub/')).stdout, [line(`docs/sub/${LONGDIR}`, LONGDIR, true), line(`docs/sub/${ODD}`, ODD_SHOWN)].join('\n') + '\n');
  t.is((await ls(dirs, 'docs/sub', '-R')).stdout.split('\n')[0], 'docs/sub:');

  for (const [args, code, message] of [
    [['nope'], 1, /nope: no such file or directory in /],
    [['docs/a.txt/x'], 1, /docs\/a\.txt: not a directory/],
    [['../x'], 2, /has a "\.\." component/],
    [['docs', 'extra'], 2, /unexpected argument 'extra'/],
  ] as const) {
    const res = await ls(dirs, ...args);
    t.is(res.code, code, `${args.join(' ')}: ${res.stderr}`);
    t.regex(res.stderr, message);
  }
  const noVolume = await run(process.execPath, [CLI, 'ls', '--passfile', passfile(dirs)], { timeoutMs: 30_000 });
  t.is(noVolume.code, 2);
  t.regex(noVolume.stderr, /--volume CIPHERDIR is required/);
  fs.writeFileSync(path.join(dirs.root, 'wrong.txt'), 'not the passphrase\n');
  const wrong = await run(process.execPath, [CLI, 'ls', '--volume', dirs.cipherDir, '--passfile', path.join(dirs.root, 'wrong.txt')], { timeoutMs: 30_000 });
  t.is(wrong.code, 3, wrong.stderr);
  t.is(wrong.stdout, '');
  t.deepEqual(snapshot(dirs.cipherDir), before, 'ls wrote nothing (not even .darefs/)');
});

test.serial('ls: a planted forged entry and a plaintext name are marked !refused with the reason (exit 6); own entries never show', async (t) => {
  const dirs = await testDirs(t);
  const c = await smallTree(dirs);
  const forged = randomBytes(32).toString('base64url');
  fs.writeFileSync(path.join(dirs.cipherDir, c('docs'), forged), 'planted');
  fs.writeFileSync(path.join(dirs.cipherDir, c('docs'), 'notes\ttxt'), 'planted in the clear');
  fs.writeFileSync(path.join(dirs.cipherDir, c('docs'), `${TEMP_PREFIX}0011`), 'temp');
  const res = await ls(dirs, 'docs');
  t.is(res.code, 6);
  const lines = res.stdout.trimEnd().split('\n');
  t.deepEqual(lines.slice(0, 3).map((l) => l.split('\t')[1]), ['a.txt', 'link', 'sub/']);
  t.deepEqual(lines.slice(3).sort(), [`${forged}\t!refused\tdoes not authenticate (forged, damaged, or another volume's)`, 'notes\\ttxt\t!refused\tis not base64url'].sort());
  t.false(res.stdout.includes(TEMP_PREFIX));
  t.false((await ls(dirs)).stdout.includes('.darefs'));
  t.regex(res.stderr, /2 entries have names that do not authenticate.*darefs fsck reports them all/);
});

test.serial('ls and fsck on a plain-names volume: both columns equal, own entries hidden; fsck output has no name fields', async (t) => {
  const dirs = await testDirs(t);
  await initMasterVolume(dirs);
  await fillVolume(dirs, async (w) => {
    w.mkdir('docs');
    await w.writeFile('docs/a.txt', 'alpha');
    await w.writeFile('b.bin', randomBytes(100));
  });
  fs.writeFileSync(path.join(dirs.cipherDir, 'docs', `${TEMP_PREFIX}0011`), 'temp');
  fs.writeFileSync(path.join(dirs.cipherDir, 'docs', `${longEntryName('z'.repeat(300))}.name`), 'a plain file of that name, not a DARE stream at all\n'.repeat(3));
  const all = await ls(dirs, '-R');
  t.is(all.code, 0, all.stderr);
  const nameFile = `${longEntryName('z'.repeat(300))}.name`;
  t.is(all.stdout, ['.:', 'b.bin\tb.bin', 'docs\tdocs/', '', 'docs:', 'a.txt\ta.txt', `${nameFile}\t${nameFile}`].join('\n') + '\n');
  t.is((await ls(dirs, '.darefs')).code, 1, 'the config directory is not in the volume');
  t.is((await ls(dirs, 'docs/a.txt')).stdout, 'a.txt\ta.txt\n');

  const { code, report } = await fsckJson(dirs, '--repair');
  t.is(code, 1, 'a foreign file, as ever');
  t.false('names' in report, 'no names section on a plain volume');
  t.false(report.files.some((f) => 'plainPath' in f));
  t.true(fs.existsSync(path.join(dirs.cipherDir, 'docs', nameFile)), 'on a plain volume a .name file is an ordinary file');
  t.deepEqual(report.files.map((f) => [f.path, f.status]), [['b.bin', 'ok'], ['docs/.darefs-tmp.0011', 'temp'], ['docs/a.txt', 'ok'], [`docs/${nameFile}`, 'foreign']]);
});

test('ls --help: usage, the columns, an example', async (t) => {
  const res = await run(process.execPath, [CLI, 'ls', '--help'], { timeoutMs: 30_000 });
  t.is(res.code, 0);
  t.regex(res.stdout, /^Usage: darefs ls --volume CIPHERDIR \[options\] \[PLAINPATH\]$/m);
  t.regex(res.stdout, /-R, --recursive/);
  t.regex(res.stdout, /!refused/);
  t.regex(res.stdout, /^Examples:\n {2}darefs ls --volume ~\/vault$/m);
  for (const l of res.stdout.split('\n')) t.true(l.length <= 80, `line too long: ${l}`);
  const global = await run(process.execPath, [CLI, '--help'], { timeoutMs: 30_000 });
  t.regex(global.stdout, /^ {2}ls +list a directory of a volume/m);
});
