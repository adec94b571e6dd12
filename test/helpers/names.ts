/**
 * FORMAT.md §8 written again from node:crypto primitives, independently of src/: the tests'
 * reference for encrypted names (known answers, and reading a cipher directory after unmount).
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readConfig, unlockMasterKey } from '../../src/keys';

export interface RefNameKeys {
  mac: Buffer;
  enc: Buffer;
}

export function refNameKeys(masterKey: Buffer): RefNameKeys {
  const okm = Buffer.from(crypto.hkdfSync('sha256', masterKey, Buffer.alloc(0), Buffer.from('darefs names v1'), 64));
  return { mac: okm.subarray(0, 32), enc: okm.subarray(32, 64) };
}

/** base64url without padding, from standard base64 by hand. */
function b64url(b: Buffer): string {
  return b.toString('base64').replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function pkcs7(name: Buffer): Buffer {
  const n = 16 - (name.length % 16);
  return Buffer.concat([name, Buffer.alloc(n, n)]);
}

export function refEncryptName(keys: RefNameKeys, name: Buffer): string {
  const p = pkcs7(name);
  const iv = crypto.createHmac('sha256', keys.mac).update(p).digest().subarray(0, 16);
  const c = crypto.createCipheriv('aes-256-ctr', keys.enc, iv);
  return b64url(Buffer.concat([iv, c.update(p), c.final()]));
}

/** The plaintext name, or undefined when it does not authenticate. */
export function refDecryptName(keys: RefNameKeys, stored: string): Buffer | undefined {
  const raw = Buffer.from(stored.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  if (raw.length < 32 || raw.length % 16 !== 0) return undefined;
  const iv = raw.subarray(0, 16);
  const d = crypto.createDecipheriv('aes-256-ctr', keys.enc, iv);
  const p = Buffer.concat([d.update(raw.subarray(16)), d.final()]);
  if (!crypto.createHmac('sha256', keys.mac).update(p).digest().subarray(0, 16).equals(iv)) return undefined;
  return p.subarray(0, p.length - p[p.length - 1]);
}

/** The name keys of a master volume, from its config and passphrase. */
export async function refVolumeNameKeys(cipherDir: string, passphrase: string): Promise<RefNameKeys> {
  const config = await readConfig(cipherDir);
  if (!config) throw new Error(`${cipherDir} has no volume config`);
  const master = await unlockMasterKey(config, cipherDir, { passphrase: Buffer.from(passphrase) });
  try {
    return refNameKeys(master);
  } finally {
    master.fill(0);
  }
}

/** The plaintext name of a full cipher name; throws unless it authenticates. */
export function refOpenName(keys: RefNameKeys, stored: string): Buffer {
  const name = refDecryptName(keys, stored);
  if (name === undefined || Buffer.from(stored, 'base64url').toString('base64url') !== stored) throw new Error(`${stored}: not a cipher name of this volume`);
  return name;
}

/** The directory entry a plaintext name gets. */
export function refEntryOf(keys: RefNameKeys, name: Buffer | string): string {
  return refEntryName(refEncryptName(keys, Buffer.isBuffer(name) ? name : Buffer.from(name)));
}

export const LONG_ENTRY = /^dare1\.long\.[A-Za-z0-9_-]{43}$/;

/** The directory entry of a cipher name: itself up to 255 bytes, else its long form. */
export function refEntryName(cipherName: string): string {
  if (Buffer.byteLength(cipherName) <= 255) return cipherName;
  return 'dare1.long.' + b64url(crypto.createHash('sha256').update(cipherName).digest());
}

/**
 * The plaintext tree of an encrypted-names cipher directory: plaintext relative path (names as
 * UTF-8 strings) -> cipher relative path. Skips .darefs at
 * the root and .name files; throws on an entry that does not open.
 */
export function refPlainTree(cipherDir: string, keys: RefNameKeys): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (plainRel: string, cipherRel: string): void => {
    for (const entry of fs.readdirSync(path.join(cipherDir, cipherRel)).sort()) {
      if (cipherRel === '' && entry === '.darefs') continue;
      if (entry.startsWith('dare1.long.') && entry.endsWith('.name')) continue;
      let full = entry;
      if (entry.startsWith('dare1.long.')) full = fs.readFileSync(path.join(cipherDir, cipherRel, entry + '.name'), 'latin1');
      const name = refDecryptName(keys, full);
      if (name === undefined) throw new Error(`cipher entry ${path.join(cipherRel, entry)} does not open`);
      if (refEntryName(full) !== entry) throw new Error(`cipher entry ${path.join(cipherRel, entry)} is not the entry of its name`);
      const p = plainRel ? `${plainRel}/${name.toString()}` : name.toString();
      const c = cipherRel ? `${cipherRel}/${entry}` : entry;
      out.set(p, c);
      if (fs.lstatSync(path.join(cipherDir, c)).isDirectory()) walk(p, c);
    }
  };
  walk('', '');
  return out;
}
