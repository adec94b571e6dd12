/**
 * Encrypted names (FORMAT.md §8) against test/helpers/names.ts, which writes §8 again from
 * node:crypto primitives: known answers over the length edges (padding of a whole block, the
 * 255-byte entry limit, the longest names) and non-UTF-8 bytes; and every way a stored name can
 * be wrong is refused.
 */
import test from 'ava';
import * as crypto from 'node:crypto';
import { NameError, decryptName, encryptName, entryName, isLongEntry, isLongNameFile, MAX_CIPHER_NAME } from '../src/dare';
import { nameKeys } from '../src/keys';
import { refDecryptName, refEncryptName, refEntryName, refNameKeys } from './helpers/names';

// Fixed vectors for MASTER, from test/helpers/names.ts when first written.
const FIXED_A = 'gu6ZVUUoz0M3EQ1p-tIboDx22CdsdCsdbsNIJg5lqes';
const FIXED_16 = 'mLlUlLsljZY8oIuA1n7Yn8FqqdCnkv1K5r9J7UlPXUwj4HuHsKsj39GEi_lF8Ijk';
const MASTER = Buffer.from('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f', 'hex');

function bytes(n: number, fill = 0x61): Buffer {
  return Buffer.alloc(n, fill);
}

const NAMES: Array<[string, Buffer]> = [
  ['1 byte', Buffer.from('a')],
  ['15 bytes (one byte of padding)', bytes(15)],
  ['16 bytes (a whole block of padding)', bytes(16)],
  ['17 bytes', bytes(17)],
  ['16 bytes that look like padding', bytes(16, 0x10)],
  ['ending in 0x01', Buffer.from('name\x01')],
  ['32 bytes', bytes(32, 0x7a)],
  ['159 bytes (the longest that fits one entry)', bytes(159)],
  ['160 bytes (the shortest long name)', bytes(160)],
  ['175 bytes', bytes(175, 0x62)],
  ['200 bytes', bytes(200, 0x63)],
  ['255 bytes', bytes(255, 0x64)],
  ['not UTF-8', Buffer.from([0x66, 0xff, 0xfe, 0x80, 0xc0, 0x2e])],
  ['UTF-8 beyond ASCII', Buffer.from('tax-return-2025 ü 😀.pdf')],
  ['a dot name', Buffer.from('.profile')],
];

test('name keys are HKDF-SHA256(master, salt empty, info "darefs names v1"), MAC key first', (t) => {
  const ref = refNameKeys(MASTER);
  const keys = nameKeys(MASTER);
  t.true(keys.mac.equals(ref.mac));
  t.true(keys.enc.equals(ref.enc));
  t.false(keys.mac.equals(keys.enc));
});

for (const [what, name] of NAMES) {
  test(`known answer: ${what}`, (t) => {
    const keys = nameKeys(MASTER);
    const ref = refNameKeys(MASTER);
    const stored = encryptName(keys, name);
    t.is(stored, refEncryptName(ref, name));
    // Padded to the next whole block: 16 + 16 * (floor(n / 16) + 1) bytes before base64.
    t.is(Buffer.from(stored, 'base64url').length, 16 + 16 * (Math.floor(name.length / 16) + 1));
    t.true(decryptName(keys, stored).equals(name));
    t.true(refDecryptName(ref, stored)!.equals(name));
    const entry = entryName(stored);
    t.is(entry, refEntryName(stored));
    t.is(isLongEntry(entry), name.length >= 160);
    t.true(entry.length <= 255);
    t.true(stored.length <= MAX_CIPHER_NAME);
  });
}

test('fixed vectors (master key 00..1f): the construction does not drift', (t) => {
  const keys = nameKeys(MASTER);
  // Computed once with test/helpers/names.ts; both implementations must keep giving them.
  const vectors: Array<[Buffer, string]> = [
    [Buffer.from('a'), refEncryptName(refNameKeys(MASTER), Buffer.from('a'))],
    [bytes(16), refEncryptName(refNameKeys(MASTER), bytes(16))],
  ];
  t.is(vectors[0][1], FIXED_A);
  t.is(vectors[1][1], FIXED_16);
  for (const [name, stored] of vectors) t.is(encryptName(keys, name), stored);
});

test('deterministic per volume: same name, same cipher name; another master key, another', (t) => {
  const a = nameKeys(MASTER);
  const b = nameKeys(crypto.randomBytes(32));
  const name = Buffer.from('report.pdf');
  t.is(encryptName(a, name), encryptName(a, name));
  t.not(encryptName(a, name), encryptName(b, name));
  t.throws(() => decryptName(b, encryptName(a, name)), { instanceOf: NameError });
});

test('a flipped bit anywhere in a stored name is refused', (t) => {
  const keys = nameKeys(MASTER);
  for (const [, name] of NAMES) {
    const raw = Buffer.from(encryptName(keys, name), 'base64url');
    for (let i = 0; i < raw.length; i += 7) {
      const bad = Buffer.from(raw);
      bad[i] ^= 0x01;
      t.throws(() => decryptName(keys, bad.toString('base64url')), { instanceOf: NameError }, `byte ${i} of ${name.length}-byte name`);
    }
  }
});

test('stored names that are not ours: wrong alphabet, non-canonical base64url, impossible lengths', (t) => {
  const keys = nameKeys(MASTER);
  const good = encryptName(keys, Buffer.from('x'));
  const refused = [
    'plain-name.txt',
    good + '=',
    good.slice(0, -1) + String.fromCharCode(good.charCodeAt(good.length - 1) + 1),
    good.slice(0, 20),
    good + 'AAAAAAAAAAAAAAAAAAAAAA',
    '',
  ];
  for (const s of refused) t.throws(() => decryptName(keys, s), { instanceOf: NameError }, JSON.stringify(s));
});

test('long-name entries and their .name files are recognised by their exact form only', (t) => {
  const entry = entryName(encryptName(nameKeys(MASTER), bytes(200)));
  t.true(isLongEntry(entry));
  t.true(isLongNameFile(entry + '.name'));
  t.false(isLongNameFile(entry));
  t.false(isLongEntry(entry + 'x'));
  t.false(isLongEntry('dare1.long.short'));
  t.false(isLongNameFile('dare1.long..name'));
});
