/**
 * Encrypted names (FORMAT.md §8) computed independently of src/dare/names.ts, from node:crypto
 * as the format writes them: to check what darefs stores, not to repeat how it does it.
 */
import * as crypto from 'node:crypto';
import { readConfig, unlockMasterKey } from '../../src/keys';

export interface TestNameKeys {
  mac: Buffer;
  enc: Buffer;
}

/** The name keys of a volume: HKDF-SHA256(master key, salt empty, info "darefs names v1"), MAC first. */
export async function volumeNameKeys(cipherDir: string, passphrase: string): Promise<TestNameKeys> {
  const config = await readConfig(cipherDir);
  if (!config) throw new Error(`${cipherDir} has no volume config`);
  const master = await unlockMasterKey(config, cipherDir, { passphrase: Buffer.from(passphrase) });
  const both = Buffer.from(crypto.hkdfSync('sha256', master, Buffer.alloc(0), Buffer.from('darefs names v1'), 64));
  master.fill(0);
  return { mac: both.subarray(0, 32), enc: both.subarray(32) };
}

const ctr = (key: Buffer, iv: Buffer, data: Buffer): Buffer => {
  const c = crypto.createCipheriv('aes-256-ctr', key, iv);
  return Buffer.concat([c.update(data), c.final()]);
};
const macOf = (keys: TestNameKeys, padded: Buffer): Buffer => crypto.createHmac('sha256', keys.mac).update(padded).digest().subarray(0, 16);

/** The full cipher name of a plaintext name: base64url(iv || AES-CTR(pad16(name))), iv = HMAC(pad16(name))[0:16]. */
export function sealName(keys: TestNameKeys, name: Buffer): string {
  const n = 16 - (name.length % 16);
  const padded = Buffer.concat([name, Buffer.alloc(n, n)]);
  const iv = macOf(keys, padded);
  return Buffer.concat([iv, ctr(keys.enc, iv, padded)]).toString('base64url');
}

/** The entry name of a full cipher name: itself, or `dare1.long.` + base64url(SHA-256(it)) past 255 bytes. */
export function longEntryOf(full: string): string {
  return full.length <= 255 ? full : `dare1.long.${crypto.createHash('sha256').update(full, 'latin1').digest('base64url')}`;
}

/** The directory entry a plaintext name gets. */
export function entryOf(keys: TestNameKeys, name: Buffer | string): string {
  return longEntryOf(sealName(keys, Buffer.isBuffer(name) ? name : Buffer.from(name)));
}

/** The plaintext name of a full cipher name; throws unless it authenticates. */
export function openName(keys: TestNameKeys, full: string): Buffer {
  const raw = Buffer.from(full, 'base64url');
  if (raw.toString('base64url') !== full || raw.length < 32 || raw.length % 16 !== 0) throw new Error(`${full}: not a cipher name`);
  const iv = raw.subarray(0, 16);
  const padded = ctr(keys.enc, iv, raw.subarray(16));
  if (!macOf(keys, padded).equals(iv)) throw new Error(`${full}: does not authenticate`);
  return padded.subarray(0, padded.length - padded[padded.length - 1]);
}

export const LONG_ENTRY = /^dare1\.long\.[A-Za-z0-9_-]{43}$/;
