// Volume settings are authenticated (FORMAT.md §4, issue 10 item 10): an attacker who can write
// the cipher directory flips a setting in .darefs/config.json; the mount must refuse instead of
// sealing new files differently. Legacy configs (settings not bound) are upgraded by the first
// read-write mount.
import test from 'ava';
import { execFile } from 'node:child_process';
import { createCipheriv, randomBytes, scryptSync } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { CLI, darefsMount, passfile, writePassfile } from './helpers/darefs';
import { VECTOR_PASSWORD } from './helpers/keys-for-tests';
import { assertNoFuseMountsLeft, cleanupLeftovers, makeTestDirs, MountDirs, withMount } from './helpers/mount';
import { writeFileSynced } from './helpers/rw';
import { mountExpectingRefusal } from './helpers/refusal';

test.after.always(() => cleanupLeftovers());

function darefs(args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 30_000 }, (err, _out, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? -1) : 0, stderr: String(stderr) });
    });
  });
}

async function dirsFor(t: { teardown(fn: () => Promise<void>): void }): Promise<MountDirs> {
  const dirs = await makeTestDirs();
  t.teardown(() => fsp.rm(dirs.root, { recursive: true, force: true }));
  return dirs;
}

const config = (dirs: MountDirs): string => path.join(dirs.cipherDir, '.darefs', 'config.json');
type Raw = Record<string, unknown>;
const readRaw = async (dirs: MountDirs): Promise<Raw> => JSON.parse(await fsp.readFile(config(dirs), 'utf8')) as Raw;

const FLIPS: Array<[string, (c: Raw) => Raw]> = [
  ['kdf', (c) => ({ ...c, kdf: 'hkdf-sha256' })],
  ['cipher', (c) => ({ ...c, cipher: 'chacha' })],
  ['writeVersion', (c) => ({ ...c, writeVersion: '2.0' })],
  ['convert2to1', (c) => ({ ...c, convert2to1: false })],
];

test.serial('a volume setting changed in config.json: the mount refuses with exit 3 and says why', async (t) => {
  t.timeout(180_000);
  const dirs = await dirsFor(t);
  await writePassfile(dirs);
  const init = await darefs(['init', '-q', '--passfile', passfile(dirs), dirs.cipherDir]);
  t.is(init.code, 0, init.stderr);
  const good = await readRaw(dirs);
  t.like(good, { kdf: 'hmac-sha256', cipher: 'aes', writeVersion: '1.0', convert2to1: true });
  for (const [name, flip] of FLIPS) {
    await fsp.writeFile(config(dirs), JSON.stringify(flip(good), null, 2));
    const r = await mountExpectingRefusal(dirs, darefsMount()(dirs));
    t.false(r.mounted, `${name}: must not mount`);
    t.is(r.exit?.code, 3, `${name}: ${r.output}`);
    t.regex(r.output, /wrong password for \S+ \(or its settings in \.darefs\/config\.json were changed: they are bound to the key\)/, name);
    t.deepEqual(await fsp.readdir(dirs.cipherDir), ['.darefs'], `${name}: nothing written`);
  }
});

test.serial('a key-file volume binds its settings too', async (t) => {
  t.timeout(60_000);
  const dirs = await dirsFor(t);
  const key = path.join(dirs.root, 'master.key');
  await fsp.writeFile(key, randomBytes(32), { mode: 0o600 });
  t.is((await darefs(['init', '-q', '--keyfile', key, dirs.cipherDir])).code, 0);
  await fsp.writeFile(config(dirs), JSON.stringify({ ...(await readRaw(dirs)), writeVersion: '2.0' }));
  const spec = { command: process.execPath, args: [CLI, 'mount', '-f', '--keyfile', key, dirs.cipherDir, dirs.mountpoint] };
  const r = await mountExpectingRefusal(dirs, spec);
  t.false(r.mounted);
  t.is(r.exit?.code, 3, r.output);
  t.regex(r.output, /wrong key file for \S+ \(or its settings in \.darefs\/config\.json were changed/);
});

/** The config an older darefs wrote: formatVersion 1, the master key sealed under a constant AAD. */
async function writeLegacyVolume(dirs: MountDirs): Promise<void> {
  const salt = randomBytes(32);
  const scrypt = { N: 1024, r: 8, p: 1 };
  const wrap = scryptSync(VECTOR_PASSWORD, salt, 32, scrypt);
  const nonce = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', wrap, nonce);
  c.setAAD(Buffer.from('darefs master key v1'));
  const sealed = Buffer.concat([nonce, c.update(randomBytes(32)), c.final(), c.getAuthTag()]);
  const legacy = {
    formatVersion: 1,
    keyMode: 'master',
    kdf: 'hmac-sha256',
    cipher: 'aes',
    writeVersion: '1.0',
    convert2to1: true,
    masterKeySource: 'passphrase',
    scrypt: { ...scrypt, salt: salt.toString('base64') },
    sealedMasterKey: sealed.toString('base64'),
  };
  await fsp.mkdir(path.join(dirs.cipherDir, '.darefs'), { mode: 0o700 });
  await fsp.writeFile(config(dirs), JSON.stringify(legacy, null, 2), { mode: 0o600 });
}

test.serial('a legacy config: a read-only mount leaves it, a read-write mount upgrades it, then a changed setting is refused', async (t) => {
  t.timeout(120_000);
  let legacyText = '';
  let cipherDir = '';
  await withMount(
    t,
    darefsMount(['--read-only']),
    async (m) => {
      t.deepEqual(await fsp.readdir(m.mountpoint), []);
      t.is(await fsp.readFile(config(m), 'utf8'), legacyText, 'read-only: config untouched');
    },
    {
      setup: async (dirs) => {
        await writePassfile(dirs);
        await writeLegacyVolume(dirs);
        legacyText = await fsp.readFile(config(dirs), 'utf8');
      },
    },
  );
  await withMount(
    t,
    darefsMount(),
    async (m) => {
      cipherDir = m.cipherDir;
      // fsync'ed: in the cipher file (not only in the journal) for the decrypt below.
      await writeFileSynced(path.join(m.mountpoint, 'new.txt'), 'written after the upgrade\n');
      const upgraded = await readRaw(m);
      t.is(upgraded.formatVersion, 2);
      t.like(upgraded, { kdf: 'hmac-sha256', cipher: 'aes', writeVersion: '1.0', convert2to1: true, masterKeySource: 'passphrase' });
      t.deepEqual(await fsp.readdir(path.join(m.cipherDir, '.darefs')).then((n) => n.filter((x) => x.startsWith('config'))), ['config.json']);
      t.is((await fsp.stat(config(m))).mode & 0o777, 0o600);
      // The same master key: the file written now decrypts with the upgraded config.
      const out = path.join(m.root, 'out.txt');
      const d = await darefs(['decrypt', '--volume', m.cipherDir, '--passfile', passfile(m), path.join(m.cipherDir, 'new.txt'), out]);
      t.is(d.code, 0, d.stderr);
      t.is(await fsp.readFile(out, 'utf8'), 'written after the upgrade\n');
      // Now bound: a flipped setting is refused (checked here, with the files still in place).
      const raw = JSON.stringify({ ...upgraded, cipher: 'chacha' });
      const tampered = path.join(m.root, 'tampered');
      await fsp.mkdir(path.join(tampered, '.darefs'), { recursive: true });
      await fsp.writeFile(path.join(tampered, '.darefs', 'config.json'), raw);
      const e = await darefs(['decrypt', '--volume', tampered, '--passfile', passfile(m), path.join(m.cipherDir, 'new.txt'), path.join(m.root, 'x')]);
      t.is(e.code, 3, e.stderr);
      t.regex(e.stderr, /settings in \.darefs\/config\.json were changed/);
    },
    {
      setup: async (dirs) => {
        await writePassfile(dirs);
        await writeLegacyVolume(dirs);
      },
    },
  );
  t.not(cipherDir, '');
});

test.serial('no mount left behind', async (t) => {
  await assertNoFuseMountsLeft();
  t.pass();
});
