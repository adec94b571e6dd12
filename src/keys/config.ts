// The volume config, CIPHERDIR/.darefs/config.json (FORMAT.md §4). It holds
// the volume settings and, in passphrase mode, the master key sealed with
// AES-256-GCM under scrypt(passphrase, salt): the GCM tag lets a wrong
// passphrase be detected from the config alone, before any file is touched.
// Directories written by sio's ncrypt have no config at all.
//
// The cipher directory is hostile (FORMAT.md §6), so the settings are
// authenticated too (§4): from formatVersion 2 every field except the seal
// itself is bound, in a canonical encoding (settingsBinding), into the AAD of
// the sealed master key, or into the key check of a key-file volume. A
// changed setting then fails exactly like a wrong key. formatVersion 1
// configs (constant AAD) are still read and are upgraded by the next unlock
// that may write (a read-write mount, passwd).

import { createCipheriv, createDecipheriv, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { constants as fsc, promises as fs, type Stats } from 'node:fs';
import * as path from 'node:path';
import { ConfigError, ConfigExistsError, KeyFileError, SecretRequiredError, WrongPasswordError } from './errors';
import { KEY_SIZE, scryptAsync, type MasterKdf, type ScryptParams } from './kdf';
import { openMetaDir, readMetaFile, readMetaFileIn, writeMetaFileFresh, type MetaDir } from './meta-dir';

export const CONFIG_DIR = '.darefs';
export const CONFIG_FILE = 'config.json';
/** formatVersion of the configs this darefs writes: 2 binds the settings to the key (§4). */
export const FORMAT_VERSION = 2;
/** Configs written before the settings were bound; read, and upgraded when the key is at hand. */
export const LEGACY_FORMAT_VERSION = 1;

export type Cipher = 'aes' | 'chacha';
export type WriteVersion = '1.0' | '2.0';

/** scrypt parameters for sealing the master key, stored so they can change later. */
export interface StoredScrypt extends ScryptParams {
  /** base64 of the random salt. */
  readonly salt: string;
}

interface VolumeConfigBase {
  /** 2: settings bound to the key; 1: legacy, settings not authenticated (upgraded on unlock). */
  readonly formatVersion: 1 | 2;
  /** Only master mode is ever stored: ncrypt-mode directories have no .darefs. */
  readonly keyMode: 'master';
  readonly kdf: MasterKdf;
  /** Cipher for new streams. */
  readonly cipher: Cipher;
  /** DARE version for new streams; 1.0 allows in-place re-sealing (FORMAT.md §5). */
  readonly writeVersion: WriteVersion;
  /** Rewrite an existing 2.0 stream as 1.0 on its first change. */
  readonly convert2to1: boolean;
  /**
   * How names are stored (FORMAT.md §8): absent in configs written before the setting existed,
   * which have plain names.
   */
  readonly names?: NameMode;
}

export type NameMode = 'plain' | 'encrypted';

export interface PassphraseVolumeConfig extends VolumeConfigBase {
  readonly masterKeySource: 'passphrase';
  readonly scrypt: StoredScrypt;
  /** base64 of nonce (12) || AES-256-GCM ciphertext (32) || tag (16). */
  readonly sealedMasterKey: string;
}

export interface KeyfileVolumeConfig extends VolumeConfigBase {
  readonly masterKeySource: 'keyfile';
  /**
   * base64 of HMAC-SHA256(masterKey, message)[0..16]: detects a wrong key file and, from
   * formatVersion 2, changed settings (the message holds them, see keyCheckOf).
   */
  readonly keyCheck: string;
}

export type VolumeConfig = PassphraseVolumeConfig | KeyfileVolumeConfig;

export interface InitOptions {
  /** Seal a fresh random master key under this passphrase. */
  readonly passphrase?: Buffer;
  /** Or use this 32-byte key (from readKeyFile) as the master key; nothing secret is stored. */
  readonly keyFile?: Buffer;
  readonly kdf?: MasterKdf;
  readonly cipher?: Cipher;
  readonly writeVersion?: WriteVersion;
  readonly convert2to1?: boolean;
  /** Encrypted names (FORMAT.md §8); default plain. */
  readonly names?: NameMode;
  /** Override the sealing scrypt cost. For tests; production uses SEAL_SCRYPT. */
  readonly scrypt?: ScryptParams;
}

export interface VolumeSecret {
  readonly passphrase?: Buffer;
  readonly keyFile?: Buffer;
}

/** Default cost for sealing the master key: ~32 MiB, ~0.1 s, paid once per mount. */
export const SEAL_SCRYPT: ScryptParams = Object.freeze({ N: 32768, r: 8, p: 1 });
export const DEFAULTS = Object.freeze({
  kdf: 'hmac-sha256' as MasterKdf,
  cipher: 'aes' as Cipher,
  // 1.0 so that writes can re-seal single packages in place (FORMAT.md §5).
  writeVersion: '1.0' as WriteVersion,
  convert2to1: true,
});

const SALT_SIZE = 32;
const NONCE_SIZE = 12;
const TAG_SIZE = 16;
const SEALED_SIZE = NONCE_SIZE + KEY_SIZE + TAG_SIZE;
const KEY_CHECK_SIZE = 16;
// Binds the sealed blob to its purpose, so it cannot be confused with any
// other AES-GCM blob sealed under the same passphrase-derived key. Version 1
// is the whole AAD of a legacy config; version 2 is followed by the settings.
const SEAL_AAD_V1 = Buffer.from('darefs master key v1', 'utf8');
const SEAL_AAD_V2 = 'darefs master key v2\n';
const KEY_CHECK_MESSAGE_V1 = Buffer.from('darefs key check', 'utf8');
const KEY_CHECK_MESSAGE_V2 = 'darefs key check v2\n';
// The fields that are the seal itself; every other field is a bound setting.
const SEAL_FIELDS: ReadonlySet<string> = new Set(['sealedMasterKey', 'keyCheck']);
// A config is a few hundred bytes; refuse to slurp anything absurd.
const MAX_CONFIG_BYTES = 64 * 1024;
// Upper bounds keep a corrupted or hostile config from asking for gigabytes.
const MAX_SCRYPT_N = 1 << 22;
const MAX_SCRYPT_R = 64;
const MAX_SCRYPT_P = 16;
const MAX_SCRYPT_MEMORY = 1024 * 1024 * 1024;

export function configPath(cipherDir: string): string {
  return path.join(cipherDir, CONFIG_DIR, CONFIG_FILE);
}

function errnoCode(err: unknown): string | undefined {
  if (err instanceof Error && 'code' in err && typeof err.code === 'string') return err.code;
  return undefined;
}

function checkScryptParams(p: ScryptParams): string | null {
  const isInt = (v: number): boolean => Number.isSafeInteger(v) && v > 0;
  if (!isInt(p.N) || p.N < 2 || (p.N & (p.N - 1)) !== 0 || p.N > MAX_SCRYPT_N) {
    return `scrypt.N must be a power of two between 2 and ${MAX_SCRYPT_N}`;
  }
  if (!isInt(p.r) || p.r > MAX_SCRYPT_R) return `scrypt.r must be an integer between 1 and ${MAX_SCRYPT_R}`;
  if (!isInt(p.p) || p.p > MAX_SCRYPT_P) return `scrypt.p must be an integer between 1 and ${MAX_SCRYPT_P}`;
  if (128 * p.r * (p.N + p.p + 2) > MAX_SCRYPT_MEMORY) return 'scrypt parameters need more than 1 GiB of memory';
  return null;
}

/**
 * JSON with object keys in sorted order and no whitespace: one byte string per value, whatever
 * order or spacing config.json happens to have on disk.
 */
function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (typeof v === 'object' && v !== null) {
    const o = v as Record<string, unknown>;
    const keys = Object.keys(o).filter((k) => o[k] !== undefined).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(',')}}`;
  }
  if (typeof v === 'number' && !Number.isSafeInteger(v)) throw new TypeError(`config value ${v} is not an integer`);
  return JSON.stringify(v);
}

/**
 * The canonical encoding of a config's settings (FORMAT.md §4): canonical JSON of every field
 * except the seal (sealedMasterKey, keyCheck). Binding the whole rest, not a list of names,
 * means a field added later is authenticated as soon as parseConfig accepts it.
 */
export function settingsBinding(config: VolumeConfig): Buffer {
  const settings = Object.fromEntries(Object.entries(config).filter(([k]) => !SEAL_FIELDS.has(k)));
  return Buffer.from(canonicalJson(settings), 'utf8');
}

function sealAad(config: VolumeConfig): Buffer {
  if (config.formatVersion === LEGACY_FORMAT_VERSION) return SEAL_AAD_V1;
  return Buffer.concat([Buffer.from(SEAL_AAD_V2, 'utf8'), settingsBinding(config)]);
}

function keyCheckOf(masterKey: Buffer, config: VolumeConfig): Buffer {
  const message =
    config.formatVersion === LEGACY_FORMAT_VERSION
      ? KEY_CHECK_MESSAGE_V1
      : Buffer.concat([Buffer.from(KEY_CHECK_MESSAGE_V2, 'utf8'), settingsBinding(config)]);
  return createHmac('sha256', masterKey).update(message).digest().subarray(0, KEY_CHECK_SIZE);
}

function seal(wrapKey: Buffer, masterKey: Buffer, aad: Buffer): Buffer {
  const nonce = randomBytes(NONCE_SIZE);
  const c = createCipheriv('aes-256-gcm', wrapKey, nonce);
  c.setAAD(aad);
  const ct = Buffer.concat([c.update(masterKey), c.final()]);
  return Buffer.concat([nonce, ct, c.getAuthTag()]);
}

/** The master key, or null when the tag does not verify (wrong passphrase or altered blob). */
function open(wrapKey: Buffer, sealed: Buffer, aad: Buffer): Buffer | null {
  const nonce = sealed.subarray(0, NONCE_SIZE);
  const ct = sealed.subarray(NONCE_SIZE, NONCE_SIZE + KEY_SIZE);
  const tag = sealed.subarray(NONCE_SIZE + KEY_SIZE);
  const d = createDecipheriv('aes-256-gcm', wrapKey, nonce, { authTagLength: TAG_SIZE });
  d.setAAD(aad);
  d.setAuthTag(tag);
  const head = d.update(ct);
  try {
    const tail = d.final();
    const key = Buffer.concat([head, tail]);
    tail.fill(0);
    return key;
  } catch {
    return null;
  } finally {
    head.fill(0);
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const h = await fs.open(dir, fsc.O_RDONLY | fsc.O_DIRECTORY);
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await fs.lstat(p);
    return true;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return false;
    throw err;
  }
}

/**
 * Publishes tmp as target without ever replacing an existing target: link()
 * fails atomically with EEXIST, so two racing inits cannot both win. Falls
 * back to check-then-rename on filesystems without hard links.
 */
async function publishNoClobber(tmp: string, target: string): Promise<void> {
  try {
    await fs.link(tmp, target);
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'EEXIST') throw new ConfigExistsError(target);
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS' && code !== 'EMLINK') {
      throw err;
    }
    if (await exists(target)) throw new ConfigExistsError(target);
    await fs.rename(tmp, target);
    return;
  }
  // The config is published at this point; a leftover temp name is harmless
  // and must not turn a successful init into a reported failure.
  await fs.unlink(tmp).catch(() => undefined);
}

async function writeConfigDurably(cipherDir: string, config: VolumeConfig): Promise<void> {
  // .darefs made or checked (meta-dir.ts); every name below is looked up in that very directory.
  const meta = openMetaDir(cipherDir, { create: true })!;
  try {
    await writeConfigIn(meta, cipherDir, config);
  } finally {
    meta.close();
  }
}

async function writeConfigIn(meta: MetaDir, cipherDir: string, config: VolumeConfig): Promise<void> {
  const dir = meta.at;
  const target = path.join(dir, CONFIG_FILE);
  const createdDir = meta.created;
  // mkdir's mode is filtered by the umask; make it exactly 0700.
  if (createdDir) await fs.chmod(dir, 0o700);
  if (await exists(target)) throw new ConfigExistsError(configPath(cipherDir));

  const tmp = path.join(dir, `${CONFIG_FILE}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
  const body = `${JSON.stringify(config, null, 2)}\n`;
  try {
    const h = await fs.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
    try {
      await h.chmod(0o600);
      await h.writeFile(body, 'utf8');
      await h.sync();
    } finally {
      await h.close();
    }
    await publishNoClobber(tmp, target);
  } catch (err) {
    if (err instanceof ConfigExistsError) err = new ConfigExistsError(configPath(cipherDir));
    await fs.rm(tmp, { force: true });
    throw err;
  }
  // The new name lives in .darefs; .darefs itself, when new, lives in cipherDir.
  await fsyncDir(dir);
  if (createdDir) await fsyncDir(cipherDir);
}

/**
 * `darefs init`: writes a new volume config. With a passphrase, a random
 * master key is generated and sealed; with a key file, only a key check is
 * stored. Refuses (ConfigExistsError) a directory that already has a config.
 */
export async function initVolume(cipherDir: string, opts: InitOptions): Promise<VolumeConfig> {
  const target = configPath(cipherDir);
  if (opts.passphrase !== undefined && opts.keyFile !== undefined) {
    throw new TypeError('initVolume needs exactly one of passphrase or keyFile, not both');
  }
  let st: Stats;
  try {
    st = await fs.stat(cipherDir);
  } catch (err) {
    throw new ConfigError(target, `cannot use ${cipherDir} as a cipher directory: ${errnoCode(err) ?? String(err)}`, {
      cause: err,
    });
  }
  if (!st.isDirectory()) throw new ConfigError(target, `${cipherDir} is not a directory`);
  if (await exists(target)) throw new ConfigExistsError(target);

  const base = {
    formatVersion: FORMAT_VERSION,
    keyMode: 'master',
    kdf: opts.kdf ?? DEFAULTS.kdf,
    cipher: opts.cipher ?? DEFAULTS.cipher,
    writeVersion: opts.writeVersion ?? DEFAULTS.writeVersion,
    convert2to1: opts.convert2to1 ?? DEFAULTS.convert2to1,
    names: opts.names ?? 'plain',
  } as const;

  let config: VolumeConfig;
  const { passphrase, keyFile } = opts;
  if (keyFile !== undefined) {
    if (keyFile.length !== KEY_SIZE) {
      throw new RangeError(`key file key must be ${KEY_SIZE} bytes, got ${keyFile.length}`);
    }
    const unsealed = { ...base, masterKeySource: 'keyfile', keyCheck: '' } as const;
    config = { ...unsealed, keyCheck: keyCheckOf(keyFile, unsealed).toString('base64') };
  } else if (passphrase !== undefined) {
    if (passphrase.length === 0) throw new TypeError('the passphrase must not be empty');
    const params = opts.scrypt ?? SEAL_SCRYPT;
    const problem = checkScryptParams(params);
    if (problem !== null) throw new RangeError(problem);
    const salt = randomBytes(SALT_SIZE);
    const masterKey = randomBytes(KEY_SIZE);
    const unsealed: PassphraseVolumeConfig = {
      ...base,
      masterKeySource: 'passphrase',
      scrypt: { N: params.N, r: params.r, p: params.p, salt: salt.toString('base64') },
      sealedMasterKey: '',
    };
    const wrapKey = await scryptAsync(passphrase, salt, KEY_SIZE, params);
    let sealed: Buffer;
    try {
      sealed = seal(wrapKey, masterKey, sealAad(unsealed));
    } finally {
      wrapKey.fill(0);
      masterKey.fill(0);
    }
    config = { ...unsealed, sealedMasterKey: sealed.toString('base64') };
  } else {
    throw new TypeError('initVolume needs a passphrase or a keyFile');
  }
  await writeConfigDurably(cipherDir, config);
  return config;
}

/** Strict base64 (what Buffer would write), decoded; null when not canonical. */
function decodeBase64(s: string): Buffer | null {
  const b = Buffer.from(s, 'base64');
  return b.toString('base64') === s ? b : null;
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Validates a parsed config; every problem names the file and the field. */
export function parseConfig(raw: unknown, file: string): VolumeConfig {
  const bad = (what: string): ConfigError =>
    new ConfigError(file, `invalid volume config ${file}: ${what}; fix the file or restore it from a backup`);
  if (!isObject(raw)) throw bad('not a JSON object');

  if (raw.formatVersion !== FORMAT_VERSION && raw.formatVersion !== LEGACY_FORMAT_VERSION) {
    if (typeof raw.formatVersion === 'number' && Number.isInteger(raw.formatVersion) && raw.formatVersion > FORMAT_VERSION) {
      throw new ConfigError(
        file,
        `${file} has formatVersion ${raw.formatVersion}, this darefs supports ${FORMAT_VERSION}: upgrade darefs`,
      );
    }
    throw bad(`formatVersion must be ${LEGACY_FORMAT_VERSION} or ${FORMAT_VERSION}`);
  }
  if (raw.keyMode !== 'master') throw bad('keyMode must be "master"');
  if (raw.kdf !== 'hmac-sha256' && raw.kdf !== 'hkdf-sha256') throw bad('kdf must be "hmac-sha256" or "hkdf-sha256"');
  if (raw.cipher !== 'aes' && raw.cipher !== 'chacha') throw bad('cipher must be "aes" or "chacha"');
  if (raw.writeVersion !== '1.0' && raw.writeVersion !== '2.0') throw bad('writeVersion must be "1.0" or "2.0"');
  if (typeof raw.convert2to1 !== 'boolean') throw bad('convert2to1 must be true or false');
  if (raw.names !== undefined && raw.names !== 'plain' && raw.names !== 'encrypted') throw bad('names must be "plain" or "encrypted"');
  // A legacy config's settings are not authenticated: a name setting there could be planted or stripped.
  if (raw.names !== undefined && raw.formatVersion === LEGACY_FORMAT_VERSION) throw bad(`names needs formatVersion ${FORMAT_VERSION}`);
  const base = {
    formatVersion: raw.formatVersion,
    keyMode: 'master',
    kdf: raw.kdf,
    cipher: raw.cipher,
    writeVersion: raw.writeVersion,
    convert2to1: raw.convert2to1,
    // Only when present: an older config's bound settings (§4) must stay byte for byte what they were.
    ...(raw.names === undefined ? {} : { names: raw.names as NameMode }),
  } as const;
  const common = ['formatVersion', 'keyMode', 'kdf', 'cipher', 'writeVersion', 'convert2to1', 'names', 'masterKeySource'];
  const onlyKeys = (allowed: string[]): void => {
    const extra = Object.keys(raw).filter((k) => !allowed.includes(k));
    // Unknown fields are rejected rather than ignored: a misspelt setting
    // would otherwise silently fall back to a default.
    if (extra.length > 0) throw bad(`unknown field(s) ${extra.join(', ')}`);
  };

  if (raw.masterKeySource === 'passphrase') {
    onlyKeys([...common, 'scrypt', 'sealedMasterKey']);
    const s = raw.scrypt;
    if (!isObject(s)) throw bad('scrypt must be an object {N, r, p, salt}');
    const extra = Object.keys(s).filter((k) => !['N', 'r', 'p', 'salt'].includes(k));
    if (extra.length > 0) throw bad(`unknown field(s) scrypt.${extra.join(', scrypt.')}`);
    if (typeof s.N !== 'number' || typeof s.r !== 'number' || typeof s.p !== 'number') {
      throw bad('scrypt.N, scrypt.r and scrypt.p must be numbers');
    }
    const params: ScryptParams = { N: s.N, r: s.r, p: s.p };
    const problem = checkScryptParams(params);
    if (problem !== null) throw bad(problem);
    const salt = typeof s.salt === 'string' ? decodeBase64(s.salt) : null;
    if (salt === null || salt.length < 16) throw bad('scrypt.salt must be base64 of at least 16 bytes');
    const sealed = typeof raw.sealedMasterKey === 'string' ? decodeBase64(raw.sealedMasterKey) : null;
    if (sealed === null || sealed.length !== SEALED_SIZE) {
      throw bad(`sealedMasterKey must be base64 of ${SEALED_SIZE} bytes`);
    }
    return {
      ...base,
      masterKeySource: 'passphrase',
      scrypt: { ...params, salt: s.salt as string },
      sealedMasterKey: raw.sealedMasterKey as string,
    };
  }
  if (raw.masterKeySource === 'keyfile') {
    onlyKeys([...common, 'keyCheck']);
    const check = typeof raw.keyCheck === 'string' ? decodeBase64(raw.keyCheck) : null;
    if (check === null || check.length !== KEY_CHECK_SIZE) throw bad(`keyCheck must be base64 of ${KEY_CHECK_SIZE} bytes`);
    return { ...base, masterKeySource: 'keyfile', keyCheck: raw.keyCheck as string };
  }
  throw bad('masterKeySource must be "passphrase" or "keyfile"');
}

/**
 * The volume config of cipherDir, or null when there is none (an ncrypt-mode
 * directory). ConfigError when it exists but cannot be read or is invalid.
 */
export async function readConfig(cipherDir: string): Promise<VolumeConfig | null> {
  const file = configPath(cipherDir);
  // .darefs checked and nothing in it followed (meta-dir.ts): ConfigError otherwise.
  const data = readMetaFile(cipherDir, CONFIG_FILE, MAX_CONFIG_BYTES);
  if (data === null) return null;
  const text = data.toString('utf8');
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(file, `volume config ${file} is not valid JSON; fix the file or restore it from a backup`, {
      cause: err,
    });
  }
  return parseConfig(raw, file);
}

export interface UnlockOptions {
  /**
   * Rewrite a legacy (formatVersion 1) config with the settings bound to the key, once the secret
   * has opened it. Only for callers that may write to the cipher directory (a read-write mount);
   * a failed upgrade is a ConfigError, since the volume would stay unauthenticated.
   */
  readonly upgrade?: boolean;
}

/**
 * The volume's 32-byte master key (a fresh buffer: the caller zeroes it when
 * done, typically after handing it to masterDeriver). Checks the secret and,
 * from formatVersion 2, the settings against the config alone:
 * WrongPasswordError on mismatch.
 */
export async function unlockMasterKey(
  config: VolumeConfig,
  cipherDir: string,
  secret: VolumeSecret,
  opts: UnlockOptions = {},
): Promise<Buffer> {
  const file = configPath(cipherDir);
  const bound = config.formatVersion === LEGACY_FORMAT_VERSION ? undefined : path.join(CONFIG_DIR, CONFIG_FILE);
  if (config.masterKeySource === 'keyfile') {
    const key = secret.keyFile;
    if (key === undefined) throw new SecretRequiredError(cipherDir, 'keyfile');
    if (key.length !== KEY_SIZE) throw new WrongPasswordError(cipherDir, 'key file', bound);
    const expected = Buffer.from(config.keyCheck, 'base64');
    if (expected.length !== KEY_CHECK_SIZE || !timingSafeEqual(keyCheckOf(key, config), expected)) {
      throw new WrongPasswordError(cipherDir, 'key file', bound);
    }
    if (opts.upgrade === true && config.formatVersion === LEGACY_FORMAT_VERSION) {
      const unsealed = { ...config, formatVersion: FORMAT_VERSION } as const;
      await upgradeConfig(cipherDir, { ...unsealed, keyCheck: keyCheckOf(key, unsealed).toString('base64') });
    }
    return Buffer.from(key);
  }

  const passphrase = secret.passphrase;
  if (passphrase === undefined) throw new SecretRequiredError(cipherDir, 'passphrase');
  const salt = decodeBase64(config.scrypt.salt);
  const sealed = decodeBase64(config.sealedMasterKey);
  // A config object built by hand rather than by readConfig may be invalid.
  if (salt === null || sealed === null || sealed.length !== SEALED_SIZE) {
    throw new ConfigError(file, `invalid volume config ${file}: bad scrypt.salt or sealedMasterKey`);
  }
  const problem = checkScryptParams(config.scrypt);
  if (problem !== null) throw new ConfigError(file, `invalid volume config ${file}: ${problem}`);
  const wrapKey = await scryptAsync(passphrase, salt, KEY_SIZE, config.scrypt);
  let masterKey: Buffer | null = null;
  try {
    masterKey = open(wrapKey, sealed, sealAad(config));
    if (masterKey === null) throw new WrongPasswordError(cipherDir, 'password', bound);
    if (opts.upgrade === true && config.formatVersion === LEGACY_FORMAT_VERSION) {
      // Same passphrase, salt and wrap key: only the AAD changes, under a fresh nonce.
      const unsealed = { ...config, formatVersion: FORMAT_VERSION } as const;
      await upgradeConfig(cipherDir, { ...unsealed, sealedMasterKey: seal(wrapKey, masterKey, sealAad(unsealed)).toString('base64') });
    }
    return masterKey;
  } catch (err) {
    masterKey?.fill(0);
    throw err;
  } finally {
    wrapKey.fill(0);
  }
}

async function upgradeConfig(cipherDir: string, next: VolumeConfig): Promise<void> {
  const file = configPath(cipherDir);
  try {
    const meta = openMetaDir(cipherDir);
    if (meta === undefined) throw Object.assign(new Error(`${file} disappeared`), { code: 'ENOENT' });
    try {
      await replaceConfigDurably(meta.at, next);
    } finally {
      meta.close();
    }
  } catch (err) {
    throw new ConfigError(
      file,
      `cannot upgrade volume config ${file} to bind its settings to the key: ${errnoCode(err) ?? String(err)}; ` +
        'mount read-only to use the volume without upgrading it',
      { cause: err },
    );
  }
}

/**
 * Replaces config.json atomically and durably: a temp file written and fsync'ed, renamed over
 * the config, the directory fsync'ed. A crash leaves the old config or the new one, whole.
 * `dir` is the opened .darefs (MetaDir.at): names are looked up in that very directory.
 */
async function replaceConfigDurably(dir: string, next: VolumeConfig): Promise<void> {
  const tmp = path.join(dir, `${CONFIG_FILE}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
  try {
    const h = await fs.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
    try {
      await h.writeFile(`${JSON.stringify(next, null, 2)}\n`, 'utf8');
      await h.sync();
    } finally {
      await h.close();
    }
    await fs.rename(tmp, path.join(dir, CONFIG_FILE));
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(dir);
}

const HEX_KEY = /^[0-9a-fA-F]{64}$/;

/**
 * A master key file: exactly 32 raw bytes, or 64 hex characters with an
 * optional trailing newline (CRLF too). Anything else is a KeyFileError.
 */
export async function readKeyFile(file: string): Promise<Buffer> {
  let data: Buffer;
  try {
    const h = await fs.open(file, fsc.O_RDONLY);
    try {
      const st = await h.stat();
      if (!st.isFile()) throw new KeyFileError(file, `key file ${file} is not a regular file`);
      // 64 hex + CRLF is the longest valid file; don't read a huge one.
      if (st.size > 66) throw new KeyFileError(file, badKeyFileMessage(file));
      data = await h.readFile();
    } finally {
      await h.close();
    }
  } catch (err) {
    if (err instanceof KeyFileError) throw err;
    throw new KeyFileError(file, `cannot read key file ${file}: ${errnoCode(err) ?? String(err)}`, { cause: err });
  }
  try {
    if (data.length === KEY_SIZE) return Buffer.from(data);
    let end = data.length;
    if (end > 0 && data[end - 1] === 0x0a) end--;
    if (end > 0 && data[end - 1] === 0x0d) end--;
    if (end === 2 * KEY_SIZE) {
      const text = data.toString('latin1', 0, end);
      if (HEX_KEY.test(text)) return Buffer.from(text, 'hex');
    }
    throw new KeyFileError(file, badKeyFileMessage(file));
  } finally {
    data.fill(0);
  }
}

function badKeyFileMessage(file: string): string {
  return `key file ${file} must hold exactly 32 raw bytes or 64 hex characters (e.g. from \`head -c 32 /dev/urandom\`)`;
}

/** Name of the previous config while a passphrase change is under way. */
export const CONFIG_BACKUP = `${CONFIG_FILE}.bak`;

/**
 * `darefs passwd`: seals the same master key under a new passphrase. Files are untouched. The old
 * config stays as config.json.bak until the new one is durable, so a crash at any point leaves a
 * config that one of the two passphrases opens.
 */
export async function changePassphrase(
  cipherDir: string,
  oldPassphrase: Buffer,
  newPassphrase: Buffer,
  opts: { scrypt?: ScryptParams } = {},
): Promise<PassphraseVolumeConfig> {
  const file = configPath(cipherDir);
  const config = await readConfig(cipherDir);
  if (config === null) throw new ConfigError(file, `${cipherDir} is not a darefs volume (no ${file})`);
  if (config.masterKeySource !== 'passphrase') {
    throw new ConfigError(file, `${cipherDir} uses an external key file, not a passphrase: there is no passphrase to change`);
  }
  if (newPassphrase.length === 0) throw new TypeError('the new passphrase must not be empty');
  const masterKey = await unlockMasterKey(config, cipherDir, { passphrase: oldPassphrase });
  const params = opts.scrypt ?? { N: config.scrypt.N, r: config.scrypt.r, p: config.scrypt.p };
  const salt = randomBytes(SALT_SIZE);
  // A legacy config leaves passwd with the settings bound (formatVersion 2), like a mount does.
  const unsealed: PassphraseVolumeConfig = {
    ...config,
    formatVersion: FORMAT_VERSION,
    scrypt: { N: params.N, r: params.r, p: params.p, salt: salt.toString('base64') },
    sealedMasterKey: '',
  };
  let sealed: Buffer;
  try {
    const wrapKey = await scryptAsync(newPassphrase, salt, KEY_SIZE, params);
    try {
      sealed = seal(wrapKey, masterKey, sealAad(unsealed));
    } finally {
      wrapKey.fill(0);
    }
  } finally {
    masterKey.fill(0);
  }
  const next: PassphraseVolumeConfig = { ...unsealed, sealedMasterKey: sealed.toString('base64') };
  // .darefs checked, no symlink in it followed (meta-dir.ts): names are looked up in that very directory.
  const meta = openMetaDir(cipherDir);
  if (meta === undefined) throw new ConfigError(file, `${file} disappeared during the passphrase change`);
  try {
    await replaceConfig(meta, cipherDir, next);
  } finally {
    meta.close();
  }
  return next;
}

async function replaceConfig(meta: MetaDir, cipherDir: string, next: PassphraseVolumeConfig): Promise<void> {
  const dir = meta.at;
  const backup = path.join(dir, CONFIG_BACKUP);
  const current = readMetaFileIn(meta, CONFIG_FILE, MAX_CONFIG_BYTES);
  if (current === null) throw new ConfigError(configPath(cipherDir), `${configPath(cipherDir)} disappeared during the passphrase change`);
  writeMetaFileFresh(meta, CONFIG_BACKUP, current);
  await fsyncDir(dir);
  await replaceConfigDurably(dir, next);
  await fs.rm(backup, { force: true });
  await fsyncDir(dir);
}
