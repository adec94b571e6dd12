/**
 * encryptStream → decryptStream round trips for both DARE versions and both ciphers: the exact
 * packaging of FORMAT.md §2–3, random-access opening of every package, and tampering.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import {
  AuthenticationError,
  Cipher,
  cipherSize,
  DareError,
  decryptStream,
  encryptStream,
  HEADER_SIZE,
  headerCipher,
  headerIsFinal,
  headerPayloadLength,
  headerSequence,
  headerVersion,
  MAX_PAYLOAD,
  openPackage,
  packageCount,
  PackageExpectation,
  packageOffset,
  payloadLength,
  plaintextSize,
  PREFIX_SIZE,
  TAG_SIZE,
  Version,
} from '../src/dare';
import { masterKey, ncryptKey, VECTOR_MASTER_KEY_HEX, VECTOR_PASSWORD } from './helpers/keys-for-tests';
import { drain, pseudoRandomBytes, randomChunks, seededRandom } from './helpers/vectors';

const SIZES = [0, 1, 65535, 65536, 65537, 3 * 65536 + 5, 5 * 1024 * 1024 + 123];
const VERSIONS = [Version.V10, Version.V20] as const;
const CIPHERS = [Cipher.AES_256_GCM, Cipher.CHACHA20_POLY1305] as const;
const versionName = (v: Version): string => (v === Version.V10 ? 'DARE 1.0' : 'DARE 2.0');
const cipherName = (c: Cipher): string => (c === Cipher.AES_256_GCM ? 'AES-256-GCM' : 'ChaCha20-Poly1305');

interface Encrypted {
  key: Buffer;
  plaintext: Buffer;
  /** prefix || DARE stream, as a file on disk. */
  file: Buffer;
}

async function encryptFile(plaintext: Buffer, key: Buffer, prefix: Buffer, version: Version, cipher: Cipher, seed: string): Promise<Buffer> {
  const { output, error } = await drain(encryptStream(randomChunks(plaintext, seededRandom(seed)), key, { version, cipher }));
  if (error !== undefined) throw error;
  return Buffer.concat([prefix, output]);
}

/** Each case is encrypted once, shared by the tests that look at it. */
const encrypted = new Map<string, Promise<Encrypted>>();
function encryptCase(version: Version, cipher: Cipher, size: number): Promise<Encrypted> {
  const id = `${version}/${cipher}/${size}`;
  let result = encrypted.get(id);
  if (result === undefined) {
    result = (async () => {
      const key = randomBytes(32);
      const plaintext = pseudoRandomBytes(size, id);
      return { key, plaintext, file: await encryptFile(plaintext, key, randomBytes(PREFIX_SIZE), version, cipher, id) };
    })();
    encrypted.set(id, result);
  }
  return result;
}

/** Package `index` of a regular file, located by the size arithmetic. */
function packageAt(file: Buffer, index: number): Buffer {
  const size = plaintextSize(file.length);
  const start = packageOffset(index);
  return file.subarray(start, start + HEADER_SIZE + payloadLength(index, size) + TAG_SIZE);
}

function expectation(file: Buffer, index: number): PackageExpectation {
  const size = plaintextSize(file.length);
  return { index, payloadLength: payloadLength(index, size), last: index === packageCount(size) - 1, reference: Buffer.from(file.subarray(PREFIX_SIZE, PREFIX_SIZE + HEADER_SIZE)) };
}

for (const version of VERSIONS) {
  for (const cipher of CIPHERS) {
    for (const size of SIZES) {
      const label = `${versionName(version)}, ${cipherName(cipher)}, ${size} bytes`;

      test(`${label}: decryptStream gives back what encryptStream sealed`, async (t) => {
        const { key, plaintext, file } = await encryptCase(version, cipher, size);
        const { output, error } = await drain(decryptStream(randomChunks(file.subarray(PREFIX_SIZE), seededRandom(label)), key));
        t.is(error, undefined);
        t.is(output.length, size);
        t.true(output.equals(plaintext), 'plaintext differs');
      });

      test(`${label}: the stream has exactly the format's packaging`, async (t) => {
        const { file } = await encryptCase(version, cipher, size);
        t.is(file.length, cipherSize(size));
        t.is(plaintextSize(file.length), size);
        const count = packageCount(size);
        const randomValues = new Set<string>();
        const reference = file.subarray(PREFIX_SIZE + 4, PREFIX_SIZE + HEADER_SIZE);
        for (let index = 0; index < count; index++) {
          const header = packageAt(file, index).subarray(0, HEADER_SIZE);
          t.is(headerVersion(header), version);
          t.is(headerCipher(header), cipher);
          t.is(headerPayloadLength(header), index < count - 1 ? MAX_PAYLOAD : size - (count - 1) * MAX_PAYLOAD);
          if (version === Version.V10) {
            t.is(headerSequence(header), index);
            randomValues.add(header.subarray(8, 16).toString('hex'));
          } else {
            t.is(headerIsFinal(header), index === count - 1, `final flag of package ${index}`);
            t.true((header[4] & 0x7f) === (reference[0] & 0x7f) && header.subarray(5).equals(reference.subarray(1)), `nonce of package ${index}`);
          }
        }
        // 1.0: a fresh random value per package, so any package can be re-sealed alone (FORMAT.md §5).
        if (version === Version.V10) t.is(randomValues.size, count);
      });

      test(`${label}: every package opens alone by random access`, async (t) => {
        const { key, plaintext, file } = await encryptCase(version, cipher, size);
        const pieces: Buffer[] = [];
        for (let index = 0; index < packageCount(size); index++) {
          const opened = openPackage(key, packageAt(file, index), expectation(file, index));
          t.true(opened.equals(plaintext.subarray(index * MAX_PAYLOAD, (index + 1) * MAX_PAYLOAD)), `package ${index}`);
          pieces.push(opened);
        }
        t.true(Buffer.concat(pieces).equals(plaintext), 'the packages together are the plaintext');
      });

      if (size === 0) continue;

      for (const region of ['header', 'ciphertext', 'tag'] as const) {
        test(`${label}: a byte changed in the ${region} of a package stops decryption at that package`, async (t) => {
          const { key, plaintext, file } = await encryptCase(version, cipher, size);
          const random = seededRandom(`${label}/${region}`);
          for (let round = 0; round < 4; round++) {
            const index = random.int(0, packageCount(size) - 1);
            const length = payloadLength(index, size);
            const [from, to] = region === 'header' ? [0, HEADER_SIZE] : region === 'ciphertext' ? [HEADER_SIZE, HEADER_SIZE + length] : [HEADER_SIZE + length, HEADER_SIZE + length + TAG_SIZE];
            const at = packageOffset(index) + random.int(from, to - 1);
            const tampered = Buffer.from(file);
            tampered[at] ^= random.int(1, 255);
            const where = `byte ${at} (package ${index})`;

            const { output, error } = await drain(decryptStream(randomChunks(tampered.subarray(PREFIX_SIZE), random), key));
            if (!(error instanceof DareError)) return t.fail(`${where}: expected a DareError, got ${String(error)}`);
            if (region !== 'header') t.true(error instanceof AuthenticationError, `${where}: ${error.name}`);
            t.is(error.packageIndex, index, `${where}: ${error.message}`);
            t.is(output.length, index * MAX_PAYLOAD, `${where}: plaintext released`);
            t.true(output.equals(plaintext.subarray(0, output.length)), `${where}: released plaintext differs`);

            const ra = t.throws(() => openPackage(key, packageAt(tampered, index), expectation(tampered, index)), undefined, `${where}: random access`);
            t.true(ra instanceof DareError && ra.packageIndex === index, `${where}: random access threw ${String(ra)}`);
          }
        });
      }
    }
  }
}

// The key of a whole file comes from its own prefix (FORMAT.md §4): re-derived, it decrypts it.
for (const mode of ['ncrypt', 'master'] as const) {
  for (const version of VERSIONS) {
    for (const cipher of CIPHERS) {
      test(`${mode} mode, ${versionName(version)}, ${cipherName(cipher)}: the key re-derived from the file's prefix decrypts it`, async (t) => {
        const derive = (prefix: Buffer): Promise<Buffer> => (mode === 'ncrypt' ? ncryptKey(VECTOR_PASSWORD, prefix) : Promise.resolve(masterKey(VECTOR_MASTER_KEY_HEX, prefix)));
        const prefix = randomBytes(PREFIX_SIZE);
        const plaintext = pseudoRandomBytes(2 * MAX_PAYLOAD + 17, `${mode}/${version}/${cipher}`);
        const file = await encryptFile(plaintext, await derive(prefix), prefix, version, cipher, mode);
        const key = await derive(Buffer.from(file.subarray(0, PREFIX_SIZE)));
        const { output, error } = await drain(decryptStream([file.subarray(PREFIX_SIZE)], key));
        t.is(error, undefined);
        t.true(output.equals(plaintext));
      });
    }
  }
}

test('two encryptions of one plaintext under one key use different nonces', async (t) => {
  const key = randomBytes(32);
  const plaintext = pseudoRandomBytes(MAX_PAYLOAD + 1, 'nonce reuse');
  for (const version of VERSIONS) {
    const a = await encryptFile(plaintext, key, Buffer.alloc(PREFIX_SIZE), version, Cipher.AES_256_GCM, 'a');
    const b = await encryptFile(plaintext, key, Buffer.alloc(PREFIX_SIZE), version, Cipher.AES_256_GCM, 'b');
    t.false(a.subarray(PREFIX_SIZE + 4, PREFIX_SIZE + HEADER_SIZE).equals(b.subarray(PREFIX_SIZE + 4, PREFIX_SIZE + HEADER_SIZE)), versionName(version));
    t.false(a.equals(b));
  }
});
