import test from 'ava';
import { createCipheriv, createHmac, randomBytes, scryptSync } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  changePassphrase,
  ConfigError,
  ConfigExistsError,
  configPath,
  initVolume,
  KeyFileError,
  readConfig,
  readKeyFile,
  SEAL_SCRYPT,
  SecretRequiredError,
  unlockMasterKey,
  WrongPasswordError,
  type VolumeConfig,
} from '../src/keys';

// Cheap sealing cost for tests; one test below uses the real default.
const FAST = { N: 1024, r: 8, p: 1 };
const PASS = Buffer.from('hunter2 hunter2', 'utf8');

const made: string[] = [];
async function tmpDir(): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'darefs-keys-'));
  made.push(dir);
  return dir;
}
test.after.always(async () => {
  await Promise.all(made.map((d) => fs.rm(d, { recursive: true, force: true })));
});

const mode = async (p: string): Promise<number> => (await fs.stat(p)).mode & 0o777;

test('init with the default (real) scrypt cost, then unlock with the right passphrase', async (t) => {
  const dir = await tmpDir();
  const cfg = await initVolume(dir, { passphrase: PASS });
  t.like(cfg, {
    formatVersion: 2,
    keyMode: 'master',
    kdf: 'hmac-sha256',
    cipher: 'aes',
    writeVersion: '1.0',
    convert2to1: true,
    masterKeySource: 'passphrase',
  });
  if (cfg.masterKeySource !== 'passphrase') return t.fail();
  t.like(cfg.scrypt, SEAL_SCRYPT);
  t.is(Buffer.from(cfg.scrypt.salt, 'base64').length, 32);
  t.is(Buffer.from(cfg.sealedMasterKey, 'base64').length, 60);

  const read = await readConfig(dir);
  t.deepEqual(read, cfg);
  const k1 = await unlockMasterKey(read as VolumeConfig, dir, { passphrase: Buffer.from(PASS) });
  const k2 = await unlockMasterKey(read as VolumeConfig, dir, { passphrase: PASS });
  t.is(k1.length, 32);
  t.deepEqual(k1, k2);
  t.false(k1.every((b) => b === 0));
});

test('a wrong passphrase is detected from the config alone', async (t) => {
  const dir = await tmpDir();
  await initVolume(dir, { passphrase: PASS, scrypt: FAST });
  const cfg = (await readConfig(dir)) as VolumeConfig;
  const err = await t.throwsAsync(unlockMasterKey(cfg, dir, { passphrase: Buffer.from('hunter3 hunter2') }), {
    instanceOf: WrongPasswordError,
  });
  t.is(err?.code, 'EBADPASS');
  t.true(err?.message.includes(dir));
  t.false(err?.message.includes('hunter'));
  await t.throwsAsync(unlockMasterKey(cfg, dir, {}), { instanceOf: SecretRequiredError });
  // A key file is no substitute for the passphrase.
  await t.throwsAsync(unlockMasterKey(cfg, dir, { keyFile: randomBytes(32) }), { instanceOf: SecretRequiredError });
});

test('a tampered sealed key or changed scrypt parameters fail as a wrong password', async (t) => {
  const dir = await tmpDir();
  const cfg = await initVolume(dir, { passphrase: PASS, scrypt: FAST });
  if (cfg.masterKeySource !== 'passphrase') return t.fail();
  const sealed = Buffer.from(cfg.sealedMasterKey, 'base64');
  sealed[20] ^= 1;
  await t.throwsAsync(unlockMasterKey({ ...cfg, sealedMasterKey: sealed.toString('base64') }, dir, { passphrase: PASS }), {
    instanceOf: WrongPasswordError,
  });
  await t.throwsAsync(unlockMasterKey({ ...cfg, scrypt: { ...cfg.scrypt, N: 2048 } }, dir, { passphrase: PASS }), {
    instanceOf: WrongPasswordError,
  });
});

test('settings given to init are stored and read back', async (t) => {
  const dir = await tmpDir();
  const cfg = await initVolume(dir, {
    passphrase: PASS,
    scrypt: FAST,
    kdf: 'hkdf-sha256',
    cipher: 'chacha',
    writeVersion: '2.0',
    convert2to1: false,
  });
  t.like(await readConfig(dir), { kdf: 'hkdf-sha256', cipher: 'chacha', writeVersion: '2.0', convert2to1: false });
  t.like(cfg, { scrypt: { N: 1024, r: 8, p: 1 } });
});

test('init twice is refused and leaves the first config intact', async (t) => {
  const dir = await tmpDir();
  await initVolume(dir, { passphrase: PASS, scrypt: FAST });
  const before = await fs.readFile(configPath(dir));
  const err = await t.throwsAsync(initVolume(dir, { passphrase: Buffer.from('other pass'), scrypt: FAST }), {
    instanceOf: ConfigExistsError,
  });
  t.is(err?.code, 'ECONFIGEXISTS');
  t.true(err?.message.includes(configPath(dir)));
  t.deepEqual(await fs.readFile(configPath(dir)), before);
});

test('concurrent inits: exactly one wins, and the winner unlocks', async (t) => {
  const dir = await tmpDir();
  const results = await Promise.allSettled(
    ['one', 'two', 'three', 'four'].map((p) => initVolume(dir, { passphrase: Buffer.from(p), scrypt: FAST })),
  );
  const won = results.filter((r) => r.status === 'fulfilled');
  t.is(won.length, 1);
  for (const r of results) if (r.status === 'rejected') t.true(r.reason instanceof ConfigExistsError);
  const winner = ['one', 'two', 'three', 'four'][results.indexOf(won[0])];
  const cfg = (await readConfig(dir)) as VolumeConfig;
  t.is((await unlockMasterKey(cfg, dir, { passphrase: Buffer.from(winner) })).length, 32);
  t.deepEqual(await fs.readdir(path.join(dir, '.darefs')), ['config.json']);
});

test('.darefs is 0700, config.json is 0600, no temp files remain', async (t) => {
  const dir = await tmpDir();
  // (ava runs tests in worker threads, where process.umask() cannot be set;
  // init chmods explicitly, so the modes do not depend on the umask anyway.)
  await initVolume(dir, { passphrase: PASS, scrypt: FAST });
  t.is(await mode(path.join(dir, '.darefs')), 0o700);
  t.is(await mode(configPath(dir)), 0o600);
  t.deepEqual(await fs.readdir(path.join(dir, '.darefs')), ['config.json']);
  t.deepEqual(await fs.readdir(dir), ['.darefs']);
});

test('readConfig returns null for a directory without a config (ncrypt mode)', async (t) => {
  const dir = await tmpDir();
  t.is(await readConfig(dir), null);
  await fs.mkdir(path.join(dir, '.darefs'));
  t.is(await readConfig(dir), null);
});

async function writeRaw(dir: string, text: string): Promise<void> {
  await fs.mkdir(path.join(dir, '.darefs'), { recursive: true });
  await fs.writeFile(configPath(dir), text);
}

test('malformed configs are ConfigErrors that name the path', async (t) => {
  const dir = await tmpDir();
  const good = (await initVolume(dir, { passphrase: PASS, scrypt: FAST })) as unknown as Record<string, unknown>;
  const cases: Array<[string, string]> = [
    ['not json', '{ formatVersion: 1'],
    ['array', '[]'],
    ['bad kdf', JSON.stringify({ ...good, kdf: 'md5' })],
    ['bad cipher', JSON.stringify({ ...good, cipher: 'des' })],
    ['bad writeVersion', JSON.stringify({ ...good, writeVersion: '3.0' })],
    ['missing convert2to1', JSON.stringify({ ...good, convert2to1: undefined })],
    ['ncrypt keyMode', JSON.stringify({ ...good, keyMode: 'ncrypt' })],
    ['unknown field', JSON.stringify({ ...good, writeVersoin: '2.0' })],
    ['bad N', JSON.stringify({ ...good, scrypt: { ...(good.scrypt as object), N: 1000 } })],
    ['huge N', JSON.stringify({ ...good, scrypt: { ...(good.scrypt as object), N: 2 ** 30 } })],
    ['bad salt', JSON.stringify({ ...good, scrypt: { ...(good.scrypt as object), salt: '***' } })],
    ['short sealed key', JSON.stringify({ ...good, sealedMasterKey: Buffer.alloc(59).toString('base64') })],
    ['no source', JSON.stringify({ ...good, masterKeySource: undefined })],
    ['keyfile without check', JSON.stringify({ ...good, masterKeySource: 'keyfile', sealedMasterKey: undefined, scrypt: undefined })],
  ];
  for (const [label, text] of cases) {
    await writeRaw(dir, text);
    const err = await t.throwsAsync(readConfig(dir), { instanceOf: ConfigError }, label);
    t.is(err?.path, configPath(dir), label);
    t.true(err?.message.includes(configPath(dir)), label);
  }
  await writeRaw(dir, JSON.stringify({ ...good, formatVersion: 3 }));
  await t.throwsAsync(readConfig(dir), { instanceOf: ConfigError, message: /upgrade darefs/ });
});

test('a config that is a directory is a ConfigError, not a crash', async (t) => {
  const dir = await tmpDir();
  await fs.mkdir(configPath(dir), { recursive: true });
  await t.throwsAsync(readConfig(dir), { instanceOf: ConfigError });
});

test('init of a missing directory is a ConfigError', async (t) => {
  const dir = path.join(await tmpDir(), 'absent');
  await t.throwsAsync(initVolume(dir, { passphrase: PASS, scrypt: FAST }), { instanceOf: ConfigError });
});

test('init needs exactly one secret', async (t) => {
  const dir = await tmpDir();
  await t.throwsAsync(initVolume(dir, {}), { instanceOf: TypeError });
  await t.throwsAsync(initVolume(dir, { passphrase: PASS, keyFile: randomBytes(32) }), { instanceOf: TypeError });
  await t.throwsAsync(initVolume(dir, { passphrase: Buffer.alloc(0) }), { instanceOf: TypeError });
  t.deepEqual(await fs.readdir(dir), []);
});

test('keyfile mode: no secret stored, the right key unlocks, a wrong key file is detected', async (t) => {
  const dir = await tmpDir();
  const key = randomBytes(32);
  const cfg = await initVolume(dir, { keyFile: key });
  t.like(cfg, { masterKeySource: 'keyfile' });
  const text = await fs.readFile(configPath(dir), 'utf8');
  t.false(text.includes(key.toString('base64')));
  t.false(text.includes(key.toString('hex')));
  t.false(text.includes('sealedMasterKey'));
  const read = (await readConfig(dir)) as VolumeConfig;
  t.deepEqual(await unlockMasterKey(read, dir, { keyFile: key }), key);
  const wrong = Buffer.from(key);
  wrong[31] ^= 0x80;
  await t.throwsAsync(unlockMasterKey(read, dir, { keyFile: wrong }), {
    instanceOf: WrongPasswordError,
    message: `wrong key file for ${dir} (or its settings in .darefs/config.json were changed: they are bound to the key)`,
  });
  await t.throwsAsync(unlockMasterKey(read, dir, { passphrase: PASS }), { instanceOf: SecretRequiredError });
});

test('readKeyFile accepts 32 raw bytes or 64 hex characters, and nothing else', async (t) => {
  const dir = await tmpDir();
  const key = randomBytes(32);
  const write = async (name: string, data: Buffer | string): Promise<string> => {
    const p = path.join(dir, name);
    await fs.writeFile(p, data);
    return p;
  };
  t.deepEqual(await readKeyFile(await write('raw', key)), key);
  t.deepEqual(await readKeyFile(await write('hex', key.toString('hex'))), key);
  t.deepEqual(await readKeyFile(await write('hexnl', `${key.toString('hex')}\n`)), key);
  t.deepEqual(await readKeyFile(await write('hexcrlf', `${key.toString('hex').toUpperCase()}\r\n`)), key);
  // A raw key that happens to end in a newline byte is still 32 raw bytes.
  const nl = Buffer.from(key);
  nl[31] = 0x0a;
  t.deepEqual(await readKeyFile(await write('rawnl', nl)), nl);

  const bad: Array<[string, Buffer | string]> = [
    ['empty', ''],
    ['short', randomBytes(31)],
    ['long', randomBytes(33)],
    ['raw+nl', Buffer.concat([key, Buffer.from('\n')])],
    ['hex63', key.toString('hex').slice(1)],
    ['nothex', 'g'.repeat(64)],
    ['hex2nl', `${key.toString('hex')}\n\n`],
    ['big', Buffer.alloc(4096)],
  ];
  for (const [name, data] of bad) {
    const p = await write(name, data);
    const err = await t.throwsAsync(readKeyFile(p), { instanceOf: KeyFileError }, name);
    t.is(err?.path, p);
    t.true(err?.message.includes(p), name);
  }
  await t.throwsAsync(readKeyFile(path.join(dir, 'missing')), { instanceOf: KeyFileError, message: /ENOENT/ });
  await t.throwsAsync(readKeyFile(dir), { instanceOf: KeyFileError });
});

// ---- settings bound to the key (FORMAT.md §4) ----

type RawConfig = Record<string, unknown>;

const FLIPS: Array<[string, (c: RawConfig) => RawConfig]> = [
  ['kdf', (c) => ({ ...c, kdf: c.kdf === 'hmac-sha256' ? 'hkdf-sha256' : 'hmac-sha256' })],
  ['cipher', (c) => ({ ...c, cipher: c.cipher === 'aes' ? 'chacha' : 'aes' })],
  ['writeVersion', (c) => ({ ...c, writeVersion: c.writeVersion === '1.0' ? '2.0' : '1.0' })],
  ['convert2to1', (c) => ({ ...c, convert2to1: !(c.convert2to1 as boolean) })],
  ['names', (c) => ({ ...c, names: c.names === 'plain' ? 'encrypted' : 'plain' })],
  // Stripping the setting (what an older darefs wrote) would show an encrypted volume's names as
  // cipher names and store new ones in the clear: a changed setting too.
  ['names removed', (c) => Object.fromEntries(Object.entries(c).filter(([k]) => k !== 'names'))],
];

test('the names setting: stored by init, absent in older configs (plain), anything else refused, never in a legacy config', async (t) => {
  const dir = await tmpDir();
  await initVolume(dir, { passphrase: PASS, scrypt: FAST, names: 'encrypted' });
  t.is((await readConfig(dir))!.names, 'encrypted');
  const raw = await readRaw(dir);
  t.is(raw.names, 'encrypted');
  const plainDir = await tmpDir();
  await initVolume(plainDir, { passphrase: PASS, scrypt: FAST });
  t.is((await readConfig(plainDir))!.names, 'plain');
  await writeRaw(dir, JSON.stringify({ ...raw, names: 'scrambled' }));
  await t.throwsAsync(readConfig(dir), { instanceOf: ConfigError, message: /names must be "plain" or "encrypted"/ });
  await writeRaw(dir, JSON.stringify({ ...raw, formatVersion: 1 }));
  await t.throwsAsync(readConfig(dir), { instanceOf: ConfigError, message: /names needs formatVersion 2/ });
});

async function readRaw(dir: string): Promise<RawConfig> {
  return JSON.parse(await fs.readFile(configPath(dir), 'utf8')) as RawConfig;
}

for (const source of ['passphrase', 'keyfile'] as const) {
  test(`${source} volume: each changed setting in config.json fails as a wrong key, naming the settings`, async (t) => {
    const dir = await tmpDir();
    const key = randomBytes(32);
    const secret = source === 'passphrase' ? { passphrase: PASS } : { keyFile: key };
    await initVolume(dir, source === 'passphrase' ? { passphrase: PASS, scrypt: FAST } : { keyFile: key });
    const good = await readRaw(dir);
    for (const [name, flip] of FLIPS) {
      await writeRaw(dir, JSON.stringify(flip(good), null, 2));
      const cfg = (await readConfig(dir)) as VolumeConfig;
      await t.throwsAsync(unlockMasterKey(cfg, dir, secret, { upgrade: true }), {
        instanceOf: WrongPasswordError,
        message: new RegExp(`^wrong ${source === 'passphrase' ? 'password' : 'key file'} for \\S+ \\(or its settings in \\.darefs/config\\.json were changed`),
      }, name);
    }
    // Key order and spacing on disk are not part of the binding: the same settings still open.
    const reordered = Object.fromEntries(Object.entries(good).reverse());
    await writeRaw(dir, JSON.stringify(reordered));
    t.is((await unlockMasterKey((await readConfig(dir)) as VolumeConfig, dir, secret)).length, 32);
  });
}

/** A config as darefs wrote it before settings were bound: formatVersion 1, constant AAD. */
async function writeLegacyConfig(dir: string, source: 'passphrase' | 'keyfile', masterKey: Buffer): Promise<void> {
  const settings = { formatVersion: 1, keyMode: 'master', kdf: 'hmac-sha256', cipher: 'aes', writeVersion: '1.0', convert2to1: true };
  let config: RawConfig;
  if (source === 'keyfile') {
    const check = createHmac('sha256', masterKey).update('darefs key check').digest().subarray(0, 16);
    config = { ...settings, masterKeySource: 'keyfile', keyCheck: check.toString('base64') };
  } else {
    const salt = randomBytes(32);
    const wrap = scryptSync(PASS, salt, 32, { N: FAST.N, r: FAST.r, p: FAST.p });
    const nonce = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', wrap, nonce);
    c.setAAD(Buffer.from('darefs master key v1'));
    const sealed = Buffer.concat([nonce, c.update(masterKey), c.final(), c.getAuthTag()]);
    config = { ...settings, masterKeySource: 'passphrase', scrypt: { ...FAST, salt: salt.toString('base64') }, sealedMasterKey: sealed.toString('base64') };
  }
  await writeRaw(dir, JSON.stringify(config, null, 2));
}

for (const source of ['passphrase', 'keyfile'] as const) {
  test(`${source} volume: a legacy config opens, is upgraded by an unlock that may write, then binds its settings`, async (t) => {
    const dir = await tmpDir();
    const master = randomBytes(32);
    const secret = source === 'passphrase' ? { passphrase: PASS } : { keyFile: master };
    await writeLegacyConfig(dir, source, master);
    const legacyText = await fs.readFile(configPath(dir), 'utf8');
    const legacy = (await readConfig(dir)) as VolumeConfig;
    t.is(legacy.formatVersion, 1);

    // Without upgrade (a read-only mount, decrypt --volume): opens, the file is left as it was.
    t.deepEqual(await unlockMasterKey(legacy, dir, secret), master);
    t.is(await fs.readFile(configPath(dir), 'utf8'), legacyText);
    // With it: the same master key, and the config is rewritten as formatVersion 2, 0600, no temp left.
    t.deepEqual(await unlockMasterKey(legacy, dir, secret, { upgrade: true }), master);
    const upgraded = (await readConfig(dir)) as VolumeConfig;
    t.is(upgraded.formatVersion, 2);
    t.like(upgraded, { kdf: 'hmac-sha256', cipher: 'aes', writeVersion: '1.0', convert2to1: true, masterKeySource: source });
    t.is(await mode(configPath(dir)), 0o600);
    t.deepEqual(await fs.readdir(path.join(dir, '.darefs')), ['config.json']);
    t.deepEqual(await unlockMasterKey(upgraded, dir, secret), master);
    // From now on a flipped setting is refused.
    await writeRaw(dir, JSON.stringify({ ...(await readRaw(dir)), cipher: 'chacha' }));
    await t.throwsAsync(unlockMasterKey((await readConfig(dir)) as VolumeConfig, dir, secret), { instanceOf: WrongPasswordError });
    // And putting formatVersion back to 1 does not turn the check off: the seal is bound to v2.
    await writeRaw(dir, JSON.stringify({ ...(await readRaw(dir)), cipher: 'aes', formatVersion: 1 }));
    await t.throwsAsync(unlockMasterKey((await readConfig(dir)) as VolumeConfig, dir, secret), { instanceOf: WrongPasswordError });
  });
}

test('passwd keeps the settings bound, and upgrades a legacy config', async (t) => {
  const dir = await tmpDir();
  const master = randomBytes(32);
  await writeLegacyConfig(dir, 'passphrase', master);
  const next = Buffer.from('a new passphrase');
  const cfg = await changePassphrase(dir, PASS, next, { scrypt: FAST });
  t.is(cfg.formatVersion, 2);
  t.deepEqual(await unlockMasterKey((await readConfig(dir)) as VolumeConfig, dir, { passphrase: next }), master);
  const good = await readRaw(dir);
  for (const [name, flip] of FLIPS) {
    // An upgraded legacy config has no names field to remove.
    if (JSON.stringify(flip(good)) === JSON.stringify(good)) continue;
    await writeRaw(dir, JSON.stringify(flip(good)));
    await t.throwsAsync(unlockMasterKey((await readConfig(dir)) as VolumeConfig, dir, { passphrase: next }), { instanceOf: WrongPasswordError }, name);
  }
  // A second passwd on a bound config stays bound.
  await writeRaw(dir, JSON.stringify(good));
  await changePassphrase(dir, next, PASS, { scrypt: FAST });
  const again = await readRaw(dir);
  t.is(again.formatVersion, 2);
  await writeRaw(dir, JSON.stringify({ ...again, kdf: 'hkdf-sha256' }));
  await t.throwsAsync(unlockMasterKey((await readConfig(dir)) as VolumeConfig, dir, { passphrase: PASS }), { instanceOf: WrongPasswordError });
});
