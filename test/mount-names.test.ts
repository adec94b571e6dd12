/**
 * Encrypted names through a real mount (FORMAT.md §8): what programs see, what the cipher
 * directory shows (nothing of the plaintext names), long and non-UTF-8 names, entries whose
 * names do not authenticate (left out, logged once per directory), a `.name` file planted by
 * another user of the cipher directory, and what plain-names volumes refuse.
 */
import test from 'ava';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { RefNameKeys, refEncryptName, refEntryName, refPlainTree, refVolumeNameKeys } from './helpers/names';
import { assertNoFuseMountsLeft, cleanupLeftovers, MountContext, withMount } from './helpers/mount';
import { cipherPathOf, initMasterVolume, masterMount, outcome, PASSPHRASE, requirePrograms, runOk, withMasterMount } from './helpers/rw';

test.after.always(async () => {
  await cleanupLeftovers();
  await assertNoFuseMountsLeft();
});

/** withMount over a fresh volume made with `darefs init --encrypt-names`. */
function withNamesMount<T>(t: Parameters<typeof withMount>[0], fn: (m: MountContext) => Promise<T>): Promise<T> {
  return withMount(t, masterMount(), fn, { setup: (dirs) => initMasterVolume(dirs, dirs.cipherDir, ['--encrypt-names']) });
}

function refKeys(cipherDir: string): Promise<RefNameKeys> {
  return refVolumeNameKeys(cipherDir, PASSPHRASE);
}

/** Every entry under `dir`, recursively: relative paths, names as latin1 strings of their bytes. */
function allCipherPaths(dir: string, rel = ''): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true, encoding: 'buffer' })) {
    const r = path.join(rel, e.name.toString('latin1'));
    out.push(r);
    if (e.isDirectory()) out.push(...allCipherPaths(dir, r));
  }
  return out;
}

/** Every entry name under `dir`, recursively. */
function allCipherNames(dir: string): string[] {
  return allCipherPaths(dir).map((r) => path.basename(r));
}

const NON_UTF8 = Buffer.from([0x72, 0x61, 0x77, 0xff, 0xfe, 0x2e, 0x62, 0x69, 0x6e]); // "raw\xff\xfe.bin"

test.serial('names through the mount: long (255 bytes), 15/16/17-byte and non-UTF-8 names work; the cipher directory shows none of them', async (t) => {
  t.timeout(90_000);
  await withNamesMount(t, async (m) => {
    const p = (n: string): string => path.join(m.mountpoint, n);
    const names = ['a'.repeat(15), 'b'.repeat(16), 'c'.repeat(17), 'tax-return-2025.pdf', 'ü😀 spaces & dots...', 'L'.repeat(255), '.darefs'];
    await fsp.mkdir(p('docs'));
    await fsp.mkdir(p('D'.repeat(200)));
    for (const n of names) await fsp.writeFile(p(n), `content of ${n}`);
    await fsp.writeFile(p(`${'D'.repeat(200)}/${'E'.repeat(180)}`), 'deep');
    await fsp.writeFile(Buffer.concat([Buffer.from(p('docs') + '/'), NON_UTF8]), 'raw name');
    await fsp.symlink('docs/../tax-return-2025.pdf', p('link'));

    t.deepEqual((await fsp.readdir(m.mountpoint)).sort(), [...names, 'docs', 'D'.repeat(200), 'link'].sort());
    const docs = await fsp.readdir(p('docs'), { encoding: 'buffer' });
    t.deepEqual(docs.map((b) => b.toString('hex')), [NON_UTF8.toString('hex')]);
    t.is(await fsp.readFile(Buffer.concat([Buffer.from(p('docs') + '/'), NON_UTF8]), 'utf8'), 'raw name');
    for (const n of names) t.is(await fsp.readFile(p(n), 'utf8'), `content of ${n}`, n);
    t.is(await fsp.readFile(p('link'), 'utf8'), 'content of tax-return-2025.pdf');
    t.is(await fsp.readFile(p(`${'D'.repeat(200)}/${'E'.repeat(180)}`), 'utf8'), 'deep');
    t.regex(m.output(), /mounted .* \(master mode, encrypted names\)/);
    // A 256-byte name is ENAMETOOLONG, as on any local file system.
    t.is(await outcome(fsp.writeFile(p('x'.repeat(256)), '')), 'ENAMETOOLONG');

    // Long names survive rename, link and unlink with their .name files kept in step.
    await fsp.rename(p('L'.repeat(255)), p('M'.repeat(254)));
    await fsp.link(p('M'.repeat(254)), p(`docs/${'N'.repeat(230)}`));
    await fsp.rename(p('c'.repeat(17)), p('R'.repeat(190)));
    await fsp.unlink(p('b'.repeat(16)));
    t.is(await fsp.readFile(p(`docs/${'N'.repeat(230)}`), 'utf8'), `content of ${'L'.repeat(255)}`);

    // The cipher directory: no plaintext name anywhere, each long entry with its .name file, and
    // the tests' own §8 code reads back exactly the tree the mount shows.
    const stored = allCipherNames(m.cipherDir);
    for (const n of [...names.filter((x) => x !== '.darefs'), 'docs', 'link', 'raw', 'LLLL', 'MMMM', 'DDDD', 'NNNN', 'tax']) {
      const trace = stored.filter((s) => s.includes(n.slice(0, 4)) && !s.startsWith('.darefs'));
      t.deepEqual(trace, [], `no trace of ${n} in the cipher directory`);
    }
    const longs = stored.filter((s) => /^dare1\.long\.[A-Za-z0-9_-]{43}$/.test(s));
    t.is(longs.length, 5);
    for (const l of longs) t.true(stored.includes(`${l}.name`), `${l} has its .name`);
    t.is(stored.filter((s) => s.endsWith('.name')).length, 5, 'no orphan .name file');
    const tree = refPlainTree(m.cipherDir, await refKeys(m.cipherDir));
    const shown = [...(await fsp.readdir(m.mountpoint)), ...(await fsp.readdir(p('docs'), { encoding: 'buffer' })).map((b) => `docs/${b.toString()}`)];
    shown.push(...(await fsp.readdir(p('D'.repeat(200)))).map((n) => `${'D'.repeat(200)}/${n}`));
    t.deepEqual([...tree.keys()].sort(), shown.sort());

    // rmdir of a directory whose long-named entries are gone leaves no .name behind.
    await fsp.unlink(p(`${'D'.repeat(200)}/${'E'.repeat(180)}`));
    await fsp.rmdir(p('D'.repeat(200)));
    const orphans = allCipherPaths(m.cipherDir).filter((r) => r.endsWith('.name') && !fs.existsSync(path.join(m.cipherDir, r.slice(0, -5))));
    t.deepEqual(orphans, []);
    t.is(allCipherPaths(m.cipherDir).filter((r) => r.endsWith('.name')).length, 3, 'the removed long names took their .name files along');
  });
});

test.serial('entries whose names do not authenticate are left out of listings and logged once per directory; lookups never reach them', async (t) => {
  t.timeout(60_000);
  await withNamesMount(t, async (m) => {
    const p = (n: string): string => path.join(m.mountpoint, n);
    for (const n of ['alpha', 'beta', 'L'.repeat(200), 'M'.repeat(210)]) await fsp.writeFile(p(n), n);
    const entry = async (n: string): Promise<string> => cipherPathOf(m.cipherDir, n);
    // A flipped character in a cipher name, a name planted without the key, two .name files swapped.
    const alpha = await entry('alpha');
    const base = path.basename(alpha);
    fs.renameSync(alpha, path.join(m.cipherDir, base.slice(0, 3) + (base[3] === 'x' ? 'y' : 'x') + base.slice(4)));
    fs.writeFileSync(path.join(m.cipherDir, 'planted.txt'), 'x');
    const [l1, l2] = [await entry('L'.repeat(200)), await entry('M'.repeat(210))];
    fs.renameSync(`${l1}.name`, `${l1}.tmp`);
    fs.renameSync(`${l2}.name`, `${l1}.name`);
    fs.renameSync(`${l1}.tmp`, `${l2}.name`);

    t.deepEqual(await fsp.readdir(m.mountpoint), ['beta']);
    t.deepEqual(await fsp.readdir(m.mountpoint), ['beta'], 'the second listing too');
    t.is(await outcome(fsp.stat(p('alpha'))), 'ENOENT', 'the name that was flipped is gone, not shown as another');
    // Each long entry is still found by lookup (its entry name is derived, not read): its content
    // authenticates, as the swap only touched the .name files the listing reads.
    t.is(await fsp.readFile(p('L'.repeat(200)), 'utf8'), 'L'.repeat(200));
    const log = m.output().split('\n').filter((l) => l.includes('do not authenticate'));
    t.is(log.length, 1, m.output());
    t.regex(log[0], /left out 4 entries/);
    t.regex(log[0], /planted\.txt/);
  });
});

const NOBODY = 65534;
const AS_NOBODY = ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--'];

test.serial('attack: another user of the cipher directory plants .name files (a symlink to a root-only file, a FIFO); darefs follows none, blocks on none, writes only its own', async (t) => {
  t.timeout(60_000);
  await requirePrograms('setpriv', 'python3');
  await withNamesMount(t, async (m) => {
    const p = (n: string): string => path.join(m.mountpoint, n);
    // A directory the other user may write in the cipher directory (a shared folder).
    await fsp.mkdir(p('drop'));
    await fsp.chmod(p('drop'), 0o777);
    const secret = path.join(m.root, 'secret');
    fs.writeFileSync(secret, 'root only', { mode: 0o600 });
    fs.chmodSync(m.root, 0o755);
    const keys = await refKeys(m.cipherDir);
    const dropCipher = await cipherPathOf(m.cipherDir, 'drop');
    const want = refEntryName(refEncryptName(keys, Buffer.from('W'.repeat(220))));
    const fifoFor = refEntryName(refEncryptName(keys, Buffer.from('F'.repeat(220))));
    await fsp.writeFile(p(`drop/${'F'.repeat(220)}`), 'fifo victim');
    const py = [
      'import os, sys',
      'd, want, fifo, secret = sys.argv[1:5]',
      // Where darefs will write the .name file of the name it is about to make: a symlink.
      'os.symlink(secret, os.path.join(d, want + ".name"))',
      // An existing entry's .name replaced by a FIFO: opening it for reading would block.
      'os.unlink(os.path.join(d, fifo + ".name"))',
      'os.mkfifo(os.path.join(d, fifo + ".name"))',
    ].join('\n');
    await runOk(AS_NOBODY[0], [...AS_NOBODY.slice(1), '/usr/bin/python3', '-c', py, dropCipher, want, fifoFor, secret]);

    // Listing does not block on the FIFO: the entry is left out.
    t.deepEqual(await fsp.readdir(p('drop')), []);
    await fsp.writeFile(p(`drop/${'W'.repeat(220)}`), 'made by root');
    t.is(fs.readFileSync(secret, 'utf8'), 'root only', 'the root-only file was not written');
    const nameFile = path.join(dropCipher, `${want}.name`);
    t.false(fs.lstatSync(nameFile).isSymbolicLink(), 'the planted symlink was replaced, not followed');
    t.is(fs.readFileSync(nameFile, 'latin1'), refEncryptName(keys, Buffer.from('W'.repeat(220))));
    t.deepEqual(await fsp.readdir(p('drop')), ['W'.repeat(220)]);
    t.regex(m.output(), /not a regular file/);
  });
});

test.serial('plain-names volumes: a non-UTF-8 name is refused (EINVAL) with a log line pointing at --encrypt-names; .darefs stays hidden', async (t) => {
  t.timeout(60_000);
  await withMasterMount(t, async (m) => {
    const raw = Buffer.concat([Buffer.from(m.mountpoint + '/'), NON_UTF8]);
    t.is(await outcome(fsp.writeFile(raw, 'x')), 'EINVAL');
    t.is(await outcome(fsp.mkdir(path.join(m.mountpoint, '.darefs'))), 'EPERM');
    await fsp.writeFile(path.join(m.mountpoint, 'ordinary ü'), 'x');
    t.deepEqual(fs.readdirSync(m.cipherDir).sort(), ['.darefs', 'ordinary ü']);
    t.regex(m.output(), /encrypt-names/);
  });
});
