/**
 * user.* extended attributes as stored on cipher inodes (src/store/xattrs.ts, FORMAT.md §8): with
 * encrypted names the name is `user.` + the cipher name of the rest (checked here against §8
 * computed with bare node:crypto) and the value `prefix || DARE 2.0 stream`; whatever does not
 * authenticate is refused. With plain names, names node cannot represent are refused.
 */
import test from 'ava';
import * as crypto from 'node:crypto';
import {
  Cipher,
  HEADER_SIZE,
  PACKAGE_OVERHEAD,
  PREFIX_SIZE,
  Version,
  randomNonce,
  sealPackage,
} from '../src/dare';
import { nameKeys } from '../src/keys';
import {
  AttrStore,
  EncryptedNames,
  InvalidAttrNameError,
  KeySource,
  MAX_SEALED_ATTR_NAME,
  NameTooLongError,
  NoSuchAttributeError,
  PlainNames,
  SealedAttrError,
  XATTR_NAME_MAX,
  attrStore,
  nameText,
} from '../src/store';
import { masterKey, VECTOR_MASTER_KEY_HEX } from './helpers/keys-for-tests';

const MASTER = Buffer.from(VECTOR_MASTER_KEY_HEX, 'hex');
const keyOf = (prefix: Buffer): Buffer => masterKey(VECTOR_MASTER_KEY_HEX, prefix);

/** A KeySource that hands out copies (the store zeroes what it gets) and counts derivations. */
function countingKeys(): KeySource & { prefixes: Buffer[] } {
  const prefixes: Buffer[] = [];
  return { prefixes, key: async (prefix) => (prefixes.push(Buffer.from(prefix)), keyOf(prefix)) };
}

function sealedStore(keys: KeySource = countingKeys(), cipher = Cipher.AES_256_GCM): AttrStore {
  return attrStore(new EncryptedNames(nameKeys(MASTER)), keys, cipher);
}

/** §8 written out with node:crypto alone: HKDF keys, PKCS#7 pad, HMAC IV, AES-256-CTR, base64url. */
function expectedCipherName(name: Buffer): string {
  const okm = Buffer.from(crypto.hkdfSync('sha256', MASTER, Buffer.alloc(0), Buffer.from('darefs names v1'), 64));
  const mac = okm.subarray(0, 32);
  const enc = okm.subarray(32);
  const padLen = 16 - (name.length % 16);
  const padded = Buffer.concat([name, Buffer.alloc(padLen, padLen)]);
  const iv = crypto.createHmac('sha256', mac).update(padded).digest().subarray(0, 16);
  const ctr = crypto.createCipheriv('aes-256-ctr', enc, iv);
  const c = Buffer.concat([ctr.update(padded), ctr.final()]);
  return Buffer.concat([iv, c]).toString('base64url');
}

const bytesName = (b: Buffer): string => nameText(b);

test('known answer: the stored name is "user." + §8 cipher name of the bytes after "user." (UTF-8, non-UTF-8, 15/16/17 bytes, longest)', (t) => {
  const store = sealedStore();
  const cases = [
    Buffer.from('color'),
    Buffer.from('xdg.origin.url'),
    Buffer.from('ä/ö:名前'),
    Buffer.from([0xff, 0xfe, 0x80, 0x41]),
    Buffer.alloc(15, 0x61),
    Buffer.alloc(16, 0x62),
    Buffer.alloc(17, 0x63),
    Buffer.alloc(MAX_SEALED_ATTR_NAME - 5, 0x64),
  ];
  for (const rest of cases) {
    const name = 'user.' + bytesName(rest);
    const stored = store.nameToSet(name);
    t.is(stored, 'user.' + expectedCipherName(rest), rest.toString('hex'));
    t.is(store.nameToFind(name), stored, 'get and remove find the same stored name (no scan)');
    t.true(stored.length <= XATTR_NAME_MAX);
    t.deepEqual(store.list([stored]), { names: [name], refused: [] });
  }
  t.is(MAX_SEALED_ATTR_NAME, 164, '"user." + 159 bytes: 176 sealed bytes, 235 base64url characters');
  t.is(store.nameToSet('user.' + 'd'.repeat(MAX_SEALED_ATTR_NAME - 5)).length, 240);
});

test('a name whose sealed form passes 255 bytes: NameTooLongError to set (ERANGE), NoSuchAttributeError to find; bare "user.": invalid', (t) => {
  const store = sealedStore();
  const long = 'user.' + 'e'.repeat(MAX_SEALED_ATTR_NAME - 4);
  const err = t.throws(() => store.nameToSet(long), { instanceOf: NameTooLongError });
  t.regex(err.message, /165 bytes, at most 164/);
  t.throws(() => store.nameToFind(long), { instanceOf: NoSuchAttributeError });
  // Multi-byte characters count as their bytes.
  t.throws(() => store.nameToSet('user.' + 'é'.repeat(80)), { instanceOf: NameTooLongError });
  t.notThrows(() => store.nameToSet('user.' + 'é'.repeat(79)));
  t.throws(() => store.nameToSet('user.'), { instanceOf: InvalidAttrNameError, message: /nothing after/ });
  t.throws(() => store.nameToFind('user.'), { instanceOf: InvalidAttrNameError });
});

test('listing: names that do not authenticate are left out and reported; other namespaces are ignored', (t) => {
  const store = sealedStore();
  const good = store.nameToSet('user.mime_type');
  const flipped = [...Array(good.length - 5).keys()].map((i) => {
    const at = 5 + i;
    return good.slice(0, at) + (good[at] === 'A' ? 'B' : 'A') + good.slice(at + 1);
  });
  const other = attrStore(new EncryptedNames(nameKeys(crypto.randomBytes(32))), countingKeys(), Cipher.AES_256_GCM).nameToSet('user.mime_type');
  const listing = store.list([good, 'user.foo', 'user.', 'security.selinux', 'trusted.x', other, ...flipped]);
  t.deepEqual(listing.names, ['user.mime_type']);
  t.deepEqual(
    listing.refused.map((r) => r.stored),
    ['user.foo', 'user.', other, ...flipped],
  );
  for (const r of listing.refused) t.regex(r.reason, /authenticate|length|base64url|canonical/);
});

test('values: round trip at 0, 1, 31, 32, 33, 4000 and 65536 bytes in both ciphers; the stored form is prefix || one final 2.0 package', async (t) => {
  for (const cipher of [Cipher.AES_256_GCM, Cipher.CHACHA20_POLY1305]) {
    const store = sealedStore(countingKeys(), cipher);
    for (const n of [0, 1, 31, 32, 33, 4000, 65536]) {
      const value = Buffer.alloc(n, 0x5a);
      const stored = await store.sealValue(value);
      t.is(stored.length, PREFIX_SIZE + (n === 0 ? 0 : n + PACKAGE_OVERHEAD), `${n} bytes`);
      if (n > 0) {
        t.is(stored[PREFIX_SIZE], Version.V20);
        t.is(stored[PREFIX_SIZE + 1], cipher);
        t.truthy(stored[PREFIX_SIZE + 4] & 0x80, 'final flag');
        if (n >= 8) t.false(stored.includes(Buffer.alloc(8, 0x5a)), 'the value is not in the clear');
      }
      t.deepEqual(await store.openValue(stored, '/f', 'user.v'), value);
    }
  }
});

test('values: a fresh prefix (so a fresh key) and nonce every seal, also for equal values; keys are derived from it', async (t) => {
  const keys = countingKeys();
  const store = sealedStore(keys);
  const value = Buffer.from('the same value');
  const a = await store.sealValue(value);
  const b = await store.sealValue(value);
  t.false(a.subarray(0, PREFIX_SIZE).equals(b.subarray(0, PREFIX_SIZE)), 'prefix');
  t.false(a.subarray(PREFIX_SIZE + 4, PREFIX_SIZE + HEADER_SIZE).equals(b.subarray(PREFIX_SIZE + 4, PREFIX_SIZE + HEADER_SIZE)), 'nonce');
  t.deepEqual(keys.prefixes.map((p) => p.toString('hex')), [a, b].map((s) => s.subarray(0, PREFIX_SIZE).toString('hex')));
});

test('values: every flipped byte, a cut, an added byte, a 1.0 or non-final package, another key: SealedAttrError naming path and attribute, never the stored bytes', async (t) => {
  const store = sealedStore();
  const value = Buffer.from('secret attribute value');
  const stored = await store.sealValue(value);
  const refused = async (bad: Buffer, label: string): Promise<void> => {
    const err = await t.throwsAsync(store.openValue(bad, '/docs/report.pdf', 'user.comment'), { instanceOf: SealedAttrError }, label);
    if (!err) return;
    t.is(err.path, '/docs/report.pdf');
    t.is(err.attribute, 'user.comment');
    t.regex(err.message, /^\/docs\/report\.pdf: extended attribute "user\.comment": /, label);
    const sample = bad.length >= PREFIX_SIZE + 12 ? bad.subarray(PREFIX_SIZE, PREFIX_SIZE + 12) : bad.subarray(0, 12);
    for (const enc of ['hex', 'base64', 'base64url', 'latin1'] as const) {
      if (err.message.includes(sample.toString(enc))) t.fail(`${label}: message quotes the stored bytes (${enc})`);
    }
  };
  for (let i = 0; i < stored.length; i++) {
    const bad = Buffer.from(stored);
    bad[i] ^= 0x01;
    await refused(bad, `byte ${i}`);
  }
  await refused(stored.subarray(0, stored.length - 1), 'cut by one byte');
  await refused(stored.subarray(0, PREFIX_SIZE + 20), 'cut inside the package');
  await refused(stored.subarray(0, 20), 'shorter than the prefix');
  await refused(Buffer.concat([stored, Buffer.of(0)]), 'a byte added');
  await refused(Buffer.concat([stored, stored.subarray(PREFIX_SIZE)]), 'a second package');
  const prefix = crypto.randomBytes(PREFIX_SIZE);
  const key = keyOf(prefix);
  const v10 = sealPackage(key, { version: Version.V10, cipher: Cipher.AES_256_GCM, index: 0, nonce: randomNonce(Version.V10), final: false }, value);
  await refused(Buffer.concat([prefix, v10]), 'a correctly keyed DARE 1.0 package');
  const notFinal = sealPackage(key, { version: Version.V20, cipher: Cipher.AES_256_GCM, index: 0, nonce: randomNonce(Version.V20), final: false }, value);
  await refused(Buffer.concat([prefix, notFinal]), 'a 2.0 package without the final flag');
  const final = sealPackage(key, { version: Version.V20, cipher: Cipher.AES_256_GCM, index: 0, nonce: randomNonce(Version.V20), final: true }, value);
  t.deepEqual(await store.openValue(Buffer.concat([prefix, final]), '/f', 'user.a'), value, 'the same package, final: opens');
  const otherVolume = attrStore(new EncryptedNames(nameKeys(MASTER)), { key: async () => crypto.randomBytes(32) }, Cipher.AES_256_GCM);
  await t.throwsAsync(otherVolume.openValue(stored, '/f', 'user.a'), { instanceOf: SealedAttrError, message: /authentication failed/ });
});

test('plain names: values and UTF-8 names as they are; a name node cannot represent is refused to set and found nowhere', async (t) => {
  const store = attrStore(new PlainNames(), countingKeys(), Cipher.AES_256_GCM);
  t.false(store.sealed);
  t.is(store.nameToSet('user.ä'), 'user.ä');
  t.is(store.nameToFind('user.\ufffd'), 'user.\ufffd');
  const notUtf8 = 'user.' + nameText(Buffer.from([0xff, 0x41]));
  const err = t.throws(() => store.nameToSet(notUtf8), { instanceOf: InvalidAttrNameError });
  t.regex(err.message, /"user\.\\udcffA".*not UTF-8.*--encrypt-names/);
  t.throws(() => store.nameToFind(notUtf8), { instanceOf: NoSuchAttributeError });
  const value = Buffer.from([0, 1, 2]);
  t.is(await store.sealValue(value), value);
  t.is(await store.openValue(value, '/f', 'user.a'), value);
  t.deepEqual(store.list(['user.a', 'trusted.b', 'user.b']), { names: ['user.a', 'user.b'], refused: [] });
});
