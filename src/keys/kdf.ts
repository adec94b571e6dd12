// Per-stream key derivation (FORMAT.md §4). Every DARE stream starts with a
// random 32-byte prefix; its 32-byte key is derived from that prefix and the
// volume secret, so no per-file key is ever stored.

import { createHmac, hkdfSync, scrypt } from 'node:crypto';
import { DisposedError } from './errors';

/** Bytes of the random prefix in front of every DARE stream. Kept local so
 * the key layer does not depend on src/dare. */
export const PREFIX_SIZE = 32;
/** Bytes of every DARE stream key and of a master key. */
export const KEY_SIZE = 32;

export interface ScryptParams {
  readonly N: number;
  readonly r: number;
  readonly p: number;
}

/** sio's ncrypt parameters; changing them breaks compatibility with ncrypt. */
export const NCRYPT_SCRYPT: ScryptParams = Object.freeze({ N: 32768, r: 16, p: 1 });

export type MasterKdf = 'hmac-sha256' | 'hkdf-sha256';

/**
 * Asynchronous scrypt. The synchronous form blocks the event loop (and so
 * every FUSE request) for ~0.2 s at ncrypt's parameters. Node's default
 * maxmem (32 MiB) is below what N=32768,r=16 needs (64 MiB), so it is raised
 * to twice OpenSSL's own estimate, 128·r·(N + p + 2).
 */
export function scryptAsync(
  password: Buffer,
  salt: Buffer,
  keyLen: number,
  params: ScryptParams,
): Promise<Buffer> {
  const maxmem = 2 * 128 * params.r * (params.N + params.p + 2);
  return new Promise((resolve, reject) => {
    // Node copies password and salt before the job runs off-thread, so the
    // caller may zero its buffers as soon as this returns.
    scrypt(password, salt, keyLen, { N: params.N, r: params.r, p: params.p, maxmem }, (err, key) => {
      if (err) reject(err);
      else resolve(key);
    });
  });
}

function checkPrefix(prefix: Buffer): void {
  if (prefix.length !== PREFIX_SIZE) {
    throw new RangeError(`stream prefix must be ${PREFIX_SIZE} bytes, got ${prefix.length}`);
  }
}

function checkMasterKey(masterKey: Buffer): void {
  if (masterKey.length !== KEY_SIZE) {
    throw new RangeError(`master key must be ${KEY_SIZE} bytes, got ${masterKey.length}`);
  }
}

/** ncrypt mode: key = scrypt(password, salt = prefix, N=32768, r=16, p=1, 32). */
export function ncryptKey(password: Buffer, prefix: Buffer): Promise<Buffer> {
  checkPrefix(prefix);
  return scryptAsync(password, prefix, KEY_SIZE, NCRYPT_SCRYPT);
}

/**
 * master mode: HMAC-SHA256(key = masterKey, msg = prefix) by default (the
 * vectors use it); HKDF-SHA256(secret = masterKey, salt = prefix, info = "")
 * as sio's examples do. Both are cheap and synchronous.
 */
export function masterFileKey(masterKey: Buffer, prefix: Buffer, kdf: MasterKdf = 'hmac-sha256'): Buffer {
  checkMasterKey(masterKey);
  checkPrefix(prefix);
  switch (kdf) {
    case 'hmac-sha256':
      return createHmac('sha256', masterKey).update(prefix).digest();
    case 'hkdf-sha256':
      // hkdfSync returns an ArrayBuffer that nothing else references.
      return Buffer.from(hkdfSync('sha256', masterKey, prefix, Buffer.alloc(0), KEY_SIZE));
    default: {
      const never: never = kdf;
      throw new RangeError(`unknown master kdf ${String(never)}`);
    }
  }
}

const JOURNAL_INFO = Buffer.from('darefs journal v1', 'utf8');
const JOURNAL_ENTRY_INFO = Buffer.from('darefs journal entry v1', 'utf8');

/**
 * The key of the journal's MAC in master mode (FORMAT.md §6): HKDF-SHA256(masterKey, salt empty,
 * info "darefs journal v1"), 32 bytes, owned by the caller (who zeroes it).
 */
export function journalKey(masterKey: Buffer): Buffer {
  checkMasterKey(masterKey);
  return Buffer.from(hkdfSync('sha256', masterKey, Buffer.alloc(0), JOURNAL_INFO, KEY_SIZE));
}

const NAMES_INFO = Buffer.from('darefs names v1', 'utf8');

/**
 * The keys of encrypted names (FORMAT.md §8): HKDF-SHA256(masterKey, salt empty, info "darefs
 * names v1"), 64 bytes: the first 32 the MAC key, the last 32 the encryption key. The caller
 * zeroes both.
 */
export function nameKeys(masterKey: Buffer): { mac: Buffer; enc: Buffer } {
  checkMasterKey(masterKey);
  const both = Buffer.from(hkdfSync('sha256', masterKey, Buffer.alloc(0), NAMES_INFO, 2 * KEY_SIZE));
  return { mac: both.subarray(0, KEY_SIZE), enc: both.subarray(KEY_SIZE) };
}

/**
 * Without a master key (ncrypt mode), the key of the MAC over one file's journal record:
 * HKDF-SHA256(that file's key, salt empty, info "darefs journal entry v1"). Only who can derive the
 * file's key (knows the password) can make a record that replays, also one that only cuts the file.
 */
export function journalEntryKey(fileKey: Buffer): Buffer {
  if (fileKey.length !== KEY_SIZE) throw new RangeError(`file key must be ${KEY_SIZE} bytes, got ${fileKey.length}`);
  return Buffer.from(hkdfSync('sha256', fileKey, Buffer.alloc(0), JOURNAL_ENTRY_INFO, KEY_SIZE));
}

/**
 * Turns a stream prefix into that stream's key. Holds a private copy of the
 * volume secret so the caller can zero its own; dispose() zeroes the copy.
 * Each derive() returns a fresh buffer owned by the caller.
 */
export interface KeyDeriver {
  /** Label for logs and status output ("ncrypt", "master/hmac-sha256"); never secret. */
  readonly kind: string;
  derive(prefix: Buffer): Promise<Buffer>;
  dispose(): void;
}

class NcryptDeriver implements KeyDeriver {
  readonly kind = 'ncrypt';
  #password: Buffer | null;

  constructor(password: Buffer) {
    this.#password = Buffer.from(password);
  }

  derive(prefix: Buffer): Promise<Buffer> {
    if (this.#password === null) return Promise.reject(new DisposedError('ncrypt key deriver'));
    try {
      return ncryptKey(this.#password, prefix);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  dispose(): void {
    this.#password?.fill(0);
    this.#password = null;
  }
}

class MasterDeriver implements KeyDeriver {
  readonly kind: string;
  readonly #kdf: MasterKdf;
  #masterKey: Buffer | null;

  constructor(masterKey: Buffer, kdf: MasterKdf) {
    checkMasterKey(masterKey);
    this.#masterKey = Buffer.from(masterKey);
    this.#kdf = kdf;
    this.kind = `master/${kdf}`;
  }

  derive(prefix: Buffer): Promise<Buffer> {
    if (this.#masterKey === null) return Promise.reject(new DisposedError('master key deriver'));
    try {
      return Promise.resolve(masterFileKey(this.#masterKey, prefix, this.#kdf));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  dispose(): void {
    this.#masterKey?.fill(0);
    this.#masterKey = null;
  }
}

/** Deriver for directories written by sio's `ncrypt` (password as UTF-8 bytes). */
export function ncryptDeriver(password: Buffer): KeyDeriver {
  return new NcryptDeriver(password);
}

/** Deriver for darefs volumes in master mode; `masterKey` must be 32 bytes. */
export function masterDeriver(masterKey: Buffer, kdf: MasterKdf = 'hmac-sha256'): KeyDeriver {
  return new MasterDeriver(masterKey, kdf);
}
