/**
 * Sealed symlink targets (FORMAT.md §7): the pure format (src/dare/symlink.ts) and the keyed
 * part (src/store/symlink.ts). Every stored form that is not a sealed, authenticating target is
 * a SealedLinkError, never a target.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import {
  Cipher,
  HEADER_SIZE,
  LinkTargetTooLongError,
  MAX_LINK_TARGET,
  PREFIX_SIZE,
  SEALED_LINK_MARKER,
  SealedLinkError,
  Version,
  decodeSealedLink,
  openDecodedLink,
  randomNonce,
  sealLinkTarget,
  sealPackage,
  sealedLinkPlainLength,
} from '../src/dare';
import { KeySource, openLink, sealLink } from '../src/store';
import { masterKey, VECTOR_MASTER_KEY_HEX } from './helpers/keys-for-tests';

const CIPHERS = [Cipher.AES_256_GCM, Cipher.CHACHA20_POLY1305] as const;
const keyOf = (prefix: Buffer): Buffer => masterKey(VECTOR_MASTER_KEY_HEX, prefix);
const keys: KeySource = { key: async (prefix) => keyOf(prefix) };

function seal(target: Buffer, cipher: Cipher = Cipher.AES_256_GCM): string {
  const prefix = randomBytes(PREFIX_SIZE);
  return sealLinkTarget(target, prefix, keyOf(prefix), cipher);
}

function open(stored: string | Buffer): Buffer {
  const decoded = decodeSealedLink(Buffer.isBuffer(stored) ? stored : Buffer.from(stored, 'latin1'));
  return openDecodedLink(decoded, keyOf(decoded.prefix));
}

/** The stored form of prefix || pkg, as a sealer would write it. */
const encode = (raw: Buffer): string => SEALED_LINK_MARKER + raw.toString('base64url');
const rawOf = (stored: string): Buffer => Buffer.from(stored.slice(SEALED_LINK_MARKER.length), 'base64url');

for (const cipher of CIPHERS) {
  test(`round trip of every length 1..${MAX_LINK_TARGET}, cipher ${cipher}; length from the stored length alone`, (t) => {
    for (let n = 1; n <= MAX_LINK_TARGET; n++) {
      const target = randomBytes(n);
      const stored = seal(target, cipher);
      if (!stored.startsWith(SEALED_LINK_MARKER)) t.fail(`length ${n}: no marker`);
      if (Buffer.byteLength(stored) >= 4096) t.fail(`length ${n}: stored form of ${stored.length} bytes`);
      if (sealedLinkPlainLength(Buffer.byteLength(stored)) !== n) t.fail(`length ${n}: plain length ${String(sealedLinkPlainLength(stored.length))}`);
      const raw = rawOf(stored);
      if (raw[PREFIX_SIZE] !== Version.V20 || raw[PREFIX_SIZE + 1] !== cipher) t.fail(`length ${n}: header ${raw.subarray(PREFIX_SIZE, PREFIX_SIZE + 2).toString('hex')}`);
      if (!open(stored).equals(target)) t.fail(`length ${n}: round trip`);
    }
    const longest = seal(Buffer.alloc(MAX_LINK_TARGET, 0x61), cipher);
    t.is(longest.length, 4092, 'the longest stored target fits PATH_MAX with its NUL');
    t.false(longest.includes('aaaa'), 'the target is not in the stored form');
  });
}

test('a fresh prefix and nonce every time: the same target seals differently', (t) => {
  const target = Buffer.from('Documents');
  t.not(seal(target), seal(target));
});

test('longer than 3000 bytes: LinkTargetTooLongError (ENAMETOOLONG), also before any key is derived; empty: refused', async (t) => {
  t.throws(() => seal(randomBytes(MAX_LINK_TARGET + 1)), { instanceOf: LinkTargetTooLongError });
  let derived = 0;
  const counting: KeySource = { key: async (p) => (derived++, keyOf(p)) };
  await t.throwsAsync(sealLink(counting, Cipher.AES_256_GCM, randomBytes(MAX_LINK_TARGET + 1)), { instanceOf: LinkTargetTooLongError });
  t.is(derived, 0);
  t.throws(() => seal(Buffer.alloc(0)), { instanceOf: RangeError });
});

test('any changed byte of the sealed bytes, or of the encoded text, fails authentication or parsing', (t) => {
  const target = Buffer.from('../some/where/else');
  const stored = seal(target);
  const raw = rawOf(stored);
  for (let i = 0; i < raw.length; i++) {
    const bad = Buffer.from(raw);
    bad[i] ^= 0x01;
    t.throws(() => open(encode(bad)), { instanceOf: SealedLinkError }, `byte ${i} (prefix < 32 <= header < 48)`);
  }
  for (let i = 0; i < stored.length; i++) {
    const c = stored[i];
    const other = c === 'A' ? 'B' : 'A';
    t.throws(() => open(stored.slice(0, i) + other + stored.slice(i + 1)), { instanceOf: SealedLinkError }, `character ${i}`);
  }
});

test('another key, or another prefix, does not open it', (t) => {
  const stored = seal(Buffer.from('target'));
  const decoded = decodeSealedLink(Buffer.from(stored));
  t.throws(() => openDecodedLink(decoded, randomBytes(32)), { instanceOf: SealedLinkError, message: /authentication failed/ });
  const raw = rawOf(stored);
  randomBytes(PREFIX_SIZE).copy(raw, 0);
  t.throws(() => open(encode(raw)), { instanceOf: SealedLinkError });
});

test('not the sealed form: plain targets, bad base64url, non-canonical, wrong lengths, 1.0, non-final, data after the final package', (t) => {
  const notSealed = ['/outside', 'Documents', '../../etc', 'dare1', 'DARE1:' + 'A'.repeat(100), ' dare1:' + 'A'.repeat(100), ''];
  for (const s of notSealed) t.throws(() => open(s), { instanceOf: SealedLinkError, message: /not sealed/ }, JSON.stringify(s));
  const stored = seal(Buffer.from('abc'));
  t.throws(() => open(stored + '='), { instanceOf: SealedLinkError, message: /not base64url/ }, 'padding');
  t.throws(() => open(stored.replace(/.$/, '+')), { instanceOf: SealedLinkError, message: /not base64url/ }, 'base64, not base64url');
  t.throws(() => open(stored + 'A'), { instanceOf: SealedLinkError }, 'a length base64 cannot have');
  t.throws(() => open(SEALED_LINK_MARKER), { instanceOf: SealedLinkError, message: /0 bytes/ }, 'empty');
  const raw = rawOf(stored);
  t.throws(() => open(encode(raw.subarray(0, PREFIX_SIZE))), { instanceOf: SealedLinkError }, 'prefix alone (an empty stream authenticates nothing)');
  t.throws(() => open(encode(raw.subarray(0, raw.length - 1))), { instanceOf: SealedLinkError }, 'cut short');
  t.throws(() => open(encode(Buffer.concat([raw, Buffer.from([0])]))), { instanceOf: SealedLinkError }, 'a byte after the final package');
  t.throws(() => open(encode(Buffer.concat([raw, raw.subarray(PREFIX_SIZE)]))), { instanceOf: SealedLinkError }, 'a second package');
  // Non-canonical: 67 bytes end in one byte, so the last character carries 4 bits that decoding
  // drops (it is one of A, Q, g, w): setting one gives the same bytes in another spelling.
  t.is(raw.length % 3, 1);
  const text = encode(raw);
  const loose = text.slice(0, -1) + String.fromCharCode(text.charCodeAt(text.length - 1) + 1);
  t.deepEqual(Buffer.from(loose.slice(SEALED_LINK_MARKER.length), 'base64url'), raw);
  t.throws(() => open(loose), { instanceOf: SealedLinkError, message: /canonical/ });
  t.throws(() => open(encode(randomBytes(PREFIX_SIZE + 32 + MAX_LINK_TARGET + 1))), { instanceOf: SealedLinkError, message: /bytes/ }, 'too long');

  // Correctly keyed packages of the wrong kind.
  const prefix = randomBytes(PREFIX_SIZE);
  const key = keyOf(prefix);
  const v10 = sealPackage(key, { version: Version.V10, cipher: Cipher.AES_256_GCM, index: 0, nonce: randomNonce(Version.V10), final: false }, Buffer.from('abc'));
  t.throws(() => open(encode(Buffer.concat([prefix, v10]))), { instanceOf: SealedLinkError, message: /2\.0/ });
  const notFinal = sealPackage(key, { version: Version.V20, cipher: Cipher.AES_256_GCM, index: 0, nonce: randomNonce(Version.V20), final: false }, Buffer.from('abc'));
  t.throws(() => open(encode(Buffer.concat([prefix, notFinal]))), { instanceOf: SealedLinkError, message: /final/ });
  const final = sealPackage(key, { version: Version.V20, cipher: Cipher.AES_256_GCM, index: 0, nonce: randomNonce(Version.V20), final: true }, Buffer.from('abc'));
  t.deepEqual(open(encode(Buffer.concat([prefix, final]))), Buffer.from('abc'), 'the same package, final: opens');
  t.is(final.length, HEADER_SIZE + 3 + 16);
});

test('plaintext length from the stored length: exact for sealed lengths, undefined for others', (t) => {
  for (let n = 1; n <= MAX_LINK_TARGET; n++) {
    const storedLength = SEALED_LINK_MARKER.length + Math.ceil(((PREFIX_SIZE + 32 + n) * 4) / 3);
    t.is(sealedLinkPlainLength(storedLength), n);
  }
  for (const len of [0, 5, 6, 7, 50, 92, 4094, 4095, 4096, 10_000]) {
    const plain = sealedLinkPlainLength(len);
    if (plain !== undefined) t.fail(`${len}: ${plain}`);
  }
  t.is(sealedLinkPlainLength('/outside'.length), undefined);
  t.pass();
});

test('store: sealLink/openLink round trip; a failure names the link, never what is stored', async (t) => {
  for (const cipher of CIPHERS) {
    const stored = await sealLink(keys, cipher, Buffer.from('dir/target'));
    t.true(stored.toString('latin1').startsWith(SEALED_LINK_MARKER));
    t.deepEqual(await openLink(keys, stored, '/a/link'), Buffer.from('dir/target'));
  }
  const err = await t.throwsAsync(openLink(keys, Buffer.from('/secret/outside/dir'), '/Documents'), { instanceOf: SealedLinkError });
  t.regex(err?.message ?? '', /^symlink \/Documents: /);
  t.false((err?.message ?? '').includes('/secret/outside'), 'the stored target is not quoted');
  const other: KeySource = { key: async () => randomBytes(32) };
  await t.throwsAsync(openLink(other, await sealLink(keys, Cipher.AES_256_GCM, Buffer.from('x')), '/l'), { instanceOf: SealedLinkError, message: /symlink \/l: .*authentication failed/ });
});
