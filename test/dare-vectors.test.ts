/**
 * Every entry of shared/vectors/manifest.json (files made by sio), read at test time, through
 * the streaming decryptor and through the random-access path of src/dare.
 */
import test, { ExecutionContext } from 'ava';
import { promises as fs } from 'node:fs';
import {
  DareError,
  decryptStream,
  HEADER_SIZE,
  IrregularStreamError,
  MAX_PAYLOAD,
  openPackage,
  PackageExpectation,
  packageCount,
  packageIndex,
  packageOffset,
  payloadLength,
  plaintextSize,
  plaintextSizeOrUndefined,
  PREFIX_SIZE,
  ShortPrefixError,
  TAG_SIZE,
  verifyHeader,
} from '../src/dare';
import { VECTOR_PASSWORD, VectorKeys } from './helpers/keys-for-tests';
import { drain, entryTitle, loadManifest, randomChunks, seededRandom, VectorEntry, vectorPath } from './helpers/vectors';

const manifest = loadManifest();
const keys = new VectorKeys();

/** Entries that carry a stream (all but the file too short to hold a prefix). */
const hasPrefix = (e: VectorEntry): boolean => e.errorSource !== 'prefix';

test.before('derive every vector key once', async () => {
  await keys.deriveAll(manifest.filter(hasPrefix));
});

const readVector = (name: string): Promise<Buffer> => fs.readFile(vectorPath(name));

function expectedPlaintext(e: VectorEntry): Promise<Buffer> {
  if (e.plaintext === null) throw new Error(`${e.file}: an ok entry without a plaintext`);
  return readVector(e.plaintext);
}

/**
 * Every pt-N.bin but pt-100.bin is a prefix of the longest one, and the mutated files all come
 * from those: what a failing decryption released must be a prefix of it.
 */
const longestPlaintext = readVector('pt-1048583.bin');

function describe(error: unknown): string {
  return error instanceof DareError ? `${error.name}(package ${error.packageIndex}, "${error.sioError}")` : String(error);
}

function assertDareError(t: ExecutionContext, error: unknown): asserts error is DareError {
  if (!(error instanceof DareError)) t.fail(`expected a DareError, got ${describe(error)}`);
}

/** Streaming decryption of the file after its prefix, fed in random-size chunks. */
function streamDecrypt(file: Buffer, key: Buffer, seed: string): Promise<{ output: Buffer; error: unknown }> {
  return drain(decryptStream(randomChunks(file.subarray(PREFIX_SIZE), seededRandom(seed)), key));
}

/**
 * Whether the packages, walked by their own length fields, lie where the size arithmetic puts
 * them: every package but the last carries 65536 bytes (FORMAT.md §2). Independent of src/dare.
 */
function isRegularLayout(file: Buffer): boolean {
  if (plaintextSizeOrUndefined(file.length) === undefined) return false;
  let offset = PREFIX_SIZE;
  while (offset < file.length) {
    if (file.length - offset < HEADER_SIZE) return false;
    const length = file.readUInt16LE(offset + 2) + 1;
    offset += HEADER_SIZE + length + TAG_SIZE;
    if (offset < file.length && length !== MAX_PAYLOAD) return false;
  }
  return offset === file.length;
}

interface RandomAccessResult {
  output: Buffer;
  error: unknown;
  /** 'open': the checks made when a file is opened (size, headers of package 0 and the last
   * package), before any plaintext; 'read': opening packages 0, 1, ... in order. */
  phase: 'open' | 'read' | undefined;
}

/**
 * The random-access path as the mount uses it: plaintext size from the file size alone,
 * package 0's and the last package's headers verified at open, then each package read at the
 * offset the size arithmetic gives, checked against package 0. Reads every package in order,
 * or only the one holding plaintext offset `at`.
 */
function randomAccessRead(file: Buffer, key: Buffer, at?: number): RandomAccessResult {
  const chunks: Buffer[] = [];
  let phase: RandomAccessResult['phase'] = 'open';
  try {
    const size = plaintextSize(file.length);
    const count = packageCount(size);
    const packageAt = (index: number): Buffer => {
      const start = packageOffset(index);
      return file.subarray(start, start + HEADER_SIZE + payloadLength(index, size) + TAG_SIZE);
    };
    if (count > 0) {
      const reference = Buffer.from(packageAt(0).subarray(0, HEADER_SIZE));
      const want = (index: number): PackageExpectation => ({ index, payloadLength: payloadLength(index, size), last: index === count - 1, reference });
      verifyHeader(packageAt(0), want(0));
      verifyHeader(packageAt(count - 1), want(count - 1));
      phase = 'read';
      const [first, end] = at === undefined ? [0, count] : [packageIndex(at), packageIndex(at) + 1];
      for (let index = first; index < end; index++) chunks.push(openPackage(key, packageAt(index), want(index)));
    }
    return { output: Buffer.concat(chunks), error: undefined, phase: undefined };
  } catch (error) {
    return { output: Buffer.concat(chunks), error, phase };
  }
}

for (const e of manifest.filter((entry) => !hasPrefix(entry))) {
  test(`${entryTitle(e)}: a file shorter than the prefix is rejected by the size check`, async (t) => {
    const file = await readVector(e.file);
    t.true(file.length < PREFIX_SIZE);
    t.is(plaintextSizeOrUndefined(file.length), undefined);
    const error = t.throws(() => plaintextSize(file.length), { instanceOf: ShortPrefixError });
    t.is(error?.packageIndex, 0);
  });
}

for (const e of manifest.filter((entry) => hasPrefix(entry) && entry.expect === 'ok')) {
  test(`${entryTitle(e)}: streaming decryption gives ${e.plaintext}`, async (t) => {
    const [file, expected] = await Promise.all([readVector(e.file), expectedPlaintext(e)]);
    const { output, error } = await streamDecrypt(file, keys.get(e), entryTitle(e));
    t.is(error, undefined, describe(error));
    t.is(output.length, expected.length);
    t.true(output.equals(expected), 'plaintext differs');
  });

  test(`${entryTitle(e)}: random access gives ${e.plaintext}, or rejects an irregular stream`, async (t) => {
    const [file, expected] = await Promise.all([readVector(e.file), expectedPlaintext(e)]);
    const { output, error } = randomAccessRead(file, keys.get(e));
    if (isRegularLayout(file)) {
      t.is(error, undefined, describe(error));
      t.is(output.length, expected.length);
      t.true(output.equals(expected), 'plaintext differs');
    } else {
      // 1.0 with short middle packages (FORMAT.md §3): valid for streaming only.
      t.true(error instanceof IrregularStreamError, describe(error));
      t.is(output.length, 0, 'no plaintext from an irregular stream');
      t.log(describe(error));
    }
  });
}

for (const e of manifest.filter((entry) => hasPrefix(entry) && entry.expect === 'error')) {
  test(`${entryTitle(e)}: streaming decryption fails with "${e.sioError}" after ${e.sioPartialBytes} bytes`, async (t) => {
    const [file, reference] = await Promise.all([readVector(e.file), longestPlaintext]);
    const { output, error } = await streamDecrypt(file, keys.get(e), entryTitle(e));
    assertDareError(t, error);
    t.is<string | null, string | null>(error.sioError, e.sioError);
    t.is<number | undefined, number | undefined>(output.length, e.sioPartialBytes, 'plaintext released before the failure');
    t.true(output.length <= error.packageIndex * MAX_PAYLOAD, `released ${output.length} bytes, failing package ${error.packageIndex}`);
    t.true(output.equals(reference.subarray(0, output.length)), 'released plaintext is not the original');
  });

  test(`${entryTitle(e)}: random access fails no later than streaming and releases nothing from there on`, async (t) => {
    const [file, reference] = await Promise.all([readVector(e.file), longestPlaintext]);
    const key = keys.get(e);
    const streaming = (await drain(decryptStream([file.subarray(PREFIX_SIZE)], key))).error;
    assertDareError(t, streaming);
    const { output, error, phase } = randomAccessRead(file, key);
    assertDareError(t, error);
    if (error.name !== streaming.name || error.packageIndex !== streaming.packageIndex) {
      t.log(`random access: ${describe(error)} at ${phase}; streaming: ${describe(streaming)}`);
    }
    if (phase === 'open') {
      // The checks at open look at the last package too, so they may name a later package
      // than streaming does; they run before any package is opened.
      t.is(output.length, 0);
    } else {
      t.true(error.packageIndex <= streaming.packageIndex, `random access failed in package ${error.packageIndex}`);
      t.true(output.length <= error.packageIndex * MAX_PAYLOAD, `released ${output.length} bytes`);
    }
    t.true(output.length <= streaming.packageIndex * MAX_PAYLOAD);
    t.true(output.length <= (e.sioPartialBytes ?? 0), 'random access released more than sio did');
    t.true(output.equals(reference.subarray(0, output.length)), 'released plaintext is not the original');
  });
}

// sio's own random-access reader returns plaintext for these reads of streams that streaming
// decryption rejects (vectors/README.md); darefs must not (FORMAT.md §3).
for (const [file, offset] of [
  ['odd-v20-vary-nonce.dare', 140_000],
  ['odd-v20-final-first.dare', 70_000],
] as const) {
  test(`${file}: a random-access read at offset ${offset} returns no plaintext`, async (t) => {
    const e = manifest.find((entry) => entry.file === file && entry.password === VECTOR_PASSWORD);
    if (e === undefined) return t.fail(`${file} is not in the manifest`);
    const { output, error } = randomAccessRead(await readVector(file), keys.get(e), offset);
    assertDareError(t, error);
    t.is(output.length, 0);
  });
}
