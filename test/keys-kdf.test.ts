import test from 'ava';
import { createDecipheriv, createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import {
  DisposedError,
  masterDeriver,
  masterFileKey,
  ncryptDeriver,
  ncryptKey,
  PREFIX_SIZE,
} from '../src/keys';

// Vectors are read in place, never copied: <repo>/../shared/vectors, from
// dist/test/ that is three levels up. DAREFS_VECTORS overrides.
const VECTORS = process.env.DAREFS_VECTORS ?? path.resolve(__dirname, '..', '..', '..', 'shared', 'vectors');
const PASSWORD = Buffer.from('correct horse battery staple', 'utf8');
const MASTER = Buffer.from('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f', 'hex');

async function vector(name: string): Promise<Buffer> {
  return fs.readFile(path.join(VECTORS, name));
}

/**
 * Opens package 0 with bare node:crypto, independent of src/dare. For
 * package 0 the AEAD nonce is header[4..16] in both DARE versions (2.0 XORs
 * the index, which is 0). Throws when the tag does not verify.
 */
function openPackage0(file: Buffer, key: Buffer): Buffer {
  const header = file.subarray(PREFIX_SIZE, PREFIX_SIZE + 16);
  const len = header.readUInt16LE(2) + 1;
  const ct = file.subarray(PREFIX_SIZE + 16, PREFIX_SIZE + 16 + len);
  const tag = file.subarray(PREFIX_SIZE + 16 + len, PREFIX_SIZE + 32 + len);
  const aad = header.subarray(0, 4);
  const nonce = header.subarray(4, 16);
  const d =
    header[1] === 0x00
      ? createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: 16 })
      : createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
  d.setAAD(aad, { plaintextLength: len });
  d.setAuthTag(tag);
  return Buffer.concat([d.update(ct), d.final()]);
}

const prefixOf = (file: Buffer): Buffer => file.subarray(0, PREFIX_SIZE);

for (const name of ['ncrypt-v10-aes-1.dare', 'ncrypt-v20-aes-1.dare', 'ncrypt-v10-chacha-100.dare']) {
  test(`ncryptKey reproduces the key of ${name}`, async (t) => {
    const file = await vector(name);
    const ptName = name.replace(/^.*-(\d+)\.dare$/, 'pt-$1.bin');
    const key = await ncryptKey(PASSWORD, prefixOf(file));
    t.is(key.length, 32);
    t.deepEqual(openPackage0(file, key), await vector(ptName));
  });
}

test('ncryptKey with a wrong password gives a key that fails authentication', async (t) => {
  const file = await vector('ncrypt-v10-aes-1.dare');
  const key = await ncryptKey(Buffer.from('wrong'), prefixOf(file));
  t.throws(() => openPackage0(file, key));
});

for (const name of ['master-v10-chacha-1.dare', 'master-v10-chacha-100.dare', 'master-v20-aes-1.dare']) {
  test(`masterFileKey (HMAC) reproduces the key of ${name}`, async (t) => {
    const file = await vector(name);
    const ptName = name.replace(/^.*-(\d+)\.dare$/, 'pt-$1.bin');
    const key = masterFileKey(MASTER, prefixOf(file), 'hmac-sha256');
    t.deepEqual(key, createHmac('sha256', MASTER).update(prefixOf(file)).digest());
    t.deepEqual(openPackage0(file, key), await vector(ptName));
    // Same through the deriver interface, with HMAC as the default.
    const d = masterDeriver(MASTER);
    t.deepEqual(await d.derive(prefixOf(file)), key);
    d.dispose();
  });
}

test('HKDF-SHA256 follows RFC 5869 (extract with salt = prefix, expand with empty info) and differs from HMAC', (t) => {
  const prefix = randomBytes(32);
  const hkdf = masterFileKey(MASTER, prefix, 'hkdf-sha256');
  t.true(Buffer.isBuffer(hkdf));
  t.is(hkdf.length, 32);
  t.deepEqual(hkdf, Buffer.from(hkdfSync('sha256', MASTER, prefix, Buffer.alloc(0), 32)));
  // RFC 5869 by hand: PRK = HMAC(salt, IKM); T(1) = HMAC(PRK, info || 0x01).
  const prk = createHmac('sha256', prefix).update(MASTER).digest();
  const t1 = createHmac('sha256', prk).update(Buffer.from([0x01])).digest();
  t.deepEqual(hkdf, t1);
  t.notDeepEqual(hkdf, masterFileKey(MASTER, prefix, 'hmac-sha256'));
});

test('the HKDF key does not open a vector sealed with the HMAC key', async (t) => {
  const file = await vector('master-v10-chacha-1.dare');
  t.throws(() => openPackage0(file, masterFileKey(MASTER, prefixOf(file), 'hkdf-sha256')));
});

test('wrong prefix and master key sizes are rejected', async (t) => {
  t.throws(() => masterFileKey(MASTER, Buffer.alloc(31)), { instanceOf: RangeError });
  t.throws(() => masterFileKey(Buffer.alloc(16), Buffer.alloc(32)), { instanceOf: RangeError });
  t.throws(() => masterDeriver(Buffer.alloc(31)), { instanceOf: RangeError });
  await t.throwsAsync(masterDeriver(MASTER).derive(Buffer.alloc(33)), { instanceOf: RangeError });
  await t.throwsAsync(ncryptDeriver(PASSWORD).derive(Buffer.alloc(20)), { instanceOf: RangeError });
});

test('derivers keep a private copy of the secret and refuse to work after dispose', async (t) => {
  const file = await vector('ncrypt-v10-aes-1.dare');
  const pw = Buffer.from(PASSWORD);
  const nd = ncryptDeriver(pw);
  pw.fill(0); // the caller may zero its own copy right away
  const key = await nd.derive(prefixOf(file));
  t.deepEqual(openPackage0(file, key), await vector('pt-1.bin'));
  t.is(nd.kind, 'ncrypt');
  nd.dispose();
  nd.dispose(); // idempotent
  await t.throwsAsync(nd.derive(prefixOf(file)), { instanceOf: DisposedError });

  const mk = Buffer.from(MASTER);
  const md = masterDeriver(mk, 'hkdf-sha256');
  mk.fill(0);
  const prefix = randomBytes(32);
  t.deepEqual(await md.derive(prefix), masterFileKey(MASTER, prefix, 'hkdf-sha256'));
  t.is(md.kind, 'master/hkdf-sha256');
  md.dispose();
  await t.throwsAsync(md.derive(prefix), { instanceOf: DisposedError, code: 'EDISPOSED' });
});

test('each derive() returns a fresh buffer the caller may zero', async (t) => {
  const d = masterDeriver(MASTER);
  const prefix = randomBytes(32);
  const a = await d.derive(prefix);
  const expected = Buffer.from(a);
  a.fill(0);
  t.deepEqual(await d.derive(prefix), expected);
});
