import * as fs from 'node:fs';
import * as path from 'node:path';

/** The reference vectors live in shared/ beside the repository; never copied into it. */
export const VECTORS_DIR = process.env.DAREFS_VECTORS ?? path.resolve(__dirname, '..', '..', '..', '..', 'shared', 'vectors');

export interface VectorEntry {
  file: string;
  plaintext: string | null;
  mode: 'ncrypt' | 'master';
  password?: string;
  masterKeyHex?: string;
  kdf?: 'hmac-sha256';
  version: '1.0' | '2.0' | null;
  cipher: string | null;
  expect: 'ok' | 'error';
  sioError: string | null;
  errorSource?: 'prefix';
  sioPartialBytes?: number;
  derivedFrom?: string;
  note?: string;
}

export function loadManifest(): VectorEntry[] {
  return JSON.parse(fs.readFileSync(path.join(VECTORS_DIR, 'manifest.json'), 'utf8')) as VectorEntry[];
}

export function vectorPath(name: string): string {
  return path.join(VECTORS_DIR, name);
}

/** A readable title for one manifest entry (files can appear twice: wrong key on purpose). */
export function entryTitle(e: VectorEntry): string {
  const secret = e.mode === 'ncrypt' ? e.password : e.masterKeyHex;
  const wrong = secret !== undefined && secret !== 'correct horse battery staple' && !secret.startsWith('000102') ? ' (wrong key)' : '';
  return `${e.file}${wrong}`;
}
