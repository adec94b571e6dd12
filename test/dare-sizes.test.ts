/**
 * The size arithmetic of FORMAT.md §2 against a brute-force model that lays a stream out
 * package by package.
 */
import test from 'ava';
import {
  cipherSize,
  DareError,
  InvalidLengthError,
  MAX_PAYLOAD,
  packageCount,
  packageIndex,
  packageOffset,
  payloadLength,
  plaintextSize,
  plaintextSizeOrUndefined,
  ShortPrefixError,
} from '../src/dare';
import { Random, seededRandom } from './helpers/vectors';

const PREFIX = 32;
const OVERHEAD = 32; // header 16 + tag 16
const PAYLOAD = 65536;
const PACKAGE = PAYLOAD + OVERHEAD;

interface Layout {
  /** Plaintext start, cipher start and payload length of each package. */
  packages: Array<{ plainStart: number; cipherStart: number; payload: number }>;
  cipherSize: number;
}

/** Model: packages of 65536 plaintext bytes, the last one carrying the rest (never empty). */
function layoutOf(plainSize: number): Layout {
  const packages: Layout['packages'] = [];
  let plain = 0;
  let cipher = PREFIX;
  while (plain < plainSize) {
    const payload = Math.min(PAYLOAD, plainSize - plain);
    packages.push({ plainStart: plain, cipherStart: cipher, payload });
    plain += payload;
    cipher += payload + OVERHEAD;
  }
  return { packages, cipherSize: cipher };
}

type Parsed = { plainSize: number } | { invalid: 'short prefix' } | { invalid: 'bad length'; brokenPackage: number };

/** Model: consumes a cipher size package by package; a rest of 1..32 bytes cannot be a package. */
function parseCipherSize(size: number): Parsed {
  if (size < PREFIX) return { invalid: 'short prefix' };
  let rest = size - PREFIX;
  let plainSize = 0;
  for (let index = 0; rest > 0; index++) {
    if (rest <= OVERHEAD) return { invalid: 'bad length', brokenPackage: index };
    const payload = Math.min(PAYLOAD, rest - OVERHEAD);
    plainSize += payload;
    rest -= payload + OVERHEAD;
  }
  return { plainSize };
}

/** Sizes concentrated around package boundaries, plus uniform ones. */
function plainSizeSample(random: Random, maxPackages: number): number {
  const k = random.int(0, maxPackages);
  return random.next() < 0.5 ? Math.max(0, k * PAYLOAD + random.int(-3, 3)) : random.int(0, maxPackages * PAYLOAD);
}

function cipherSizeSample(random: Random, maxPackages: number): number {
  const k = random.int(0, maxPackages);
  return random.next() < 0.6 ? Math.max(0, PREFIX + k * PACKAGE + random.int(-40, 40)) : random.int(0, PREFIX + maxPackages * PACKAGE);
}

test('the format constants are the ones the model uses', (t) => {
  t.is(MAX_PAYLOAD, PAYLOAD);
  t.is(packageOffset(0), PREFIX);
  t.is(packageOffset(1) - packageOffset(0), PACKAGE);
});

test('cipherSize, packageCount and payloadLength match the package-by-package layout', (t) => {
  const random = seededRandom('layout');
  const sizes = [0, 1, 2, 65535, 65536, 65537, 131071, 131072, 131073];
  for (let i = 0; i < 3000; i++) sizes.push(plainSizeSample(random, 200));
  for (const size of sizes) {
    const layout = layoutOf(size);
    const count = layout.packages.length;
    if (cipherSize(size) !== layout.cipherSize) return t.fail(`cipherSize(${size}) = ${cipherSize(size)}, model ${layout.cipherSize}`);
    if (packageCount(size) !== count) return t.fail(`packageCount(${size}) = ${packageCount(size)}, model ${count}`);
    for (const [index, p] of layout.packages.entries()) {
      if (packageOffset(index) !== p.cipherStart) return t.fail(`packageOffset(${index}) = ${packageOffset(index)}, model ${p.cipherStart}`);
      if (payloadLength(index, size) !== p.payload) return t.fail(`payloadLength(${index}, ${size}) = ${payloadLength(index, size)}, model ${p.payload}`);
    }
    if (payloadLength(count, size) !== 0) return t.fail(`payloadLength(${count}, ${size}) past the end is ${payloadLength(count, size)}`);
  }
  t.pass();
});

test('packageIndex and packageOffset locate every plaintext offset where the layout puts it', (t) => {
  const random = seededRandom('offsets');
  for (let i = 0; i < 2000; i++) {
    const size = Math.max(1, plainSizeSample(random, 120));
    const layout = layoutOf(size);
    for (let j = 0; j < 5; j++) {
      const k = random.int(0, layout.packages.length);
      const offset = random.next() < 0.5 ? Math.min(size - 1, Math.max(0, k * PAYLOAD + random.int(-2, 1))) : random.int(0, size - 1);
      const index = layout.packages.findIndex((p) => offset >= p.plainStart && offset < p.plainStart + p.payload);
      const p = layout.packages[index];
      if (packageIndex(offset) !== index) return t.fail(`packageIndex(${offset}) = ${packageIndex(offset)}, model ${index} (size ${size})`);
      if (packageOffset(packageIndex(offset)) !== p.cipherStart) return t.fail(`packageOffset for offset ${offset}: ${packageOffset(index)}, model ${p.cipherStart}`);
      // The plaintext byte sits at header + (offset - package start) in the cipher file.
      const cipherByte = packageOffset(index) + 16 + (offset - index * MAX_PAYLOAD);
      if (cipherByte !== p.cipherStart + 16 + (offset - p.plainStart)) return t.fail(`cipher position of plaintext offset ${offset}`);
    }
  }
  t.pass();
});

test('plaintextSize inverts the layout and rejects sizes no stream can have', (t) => {
  const random = seededRandom('cipher sizes');
  const sizes: number[] = [];
  for (let n = 0; n <= 3 * PACKAGE + 80; n++) sizes.push(n); // every size of the first packages
  for (let i = 0; i < 5000; i++) sizes.push(cipherSizeSample(random, 300));
  let invalid = 0;
  for (const size of sizes) {
    const model = parseCipherSize(size);
    const quick = plaintextSizeOrUndefined(size);
    if ('plainSize' in model) {
      if (quick !== model.plainSize) return t.fail(`plaintextSizeOrUndefined(${size}) = ${quick}, model ${model.plainSize}`);
      if (plaintextSize(size) !== model.plainSize) return t.fail(`plaintextSize(${size}) = ${plaintextSize(size)}, model ${model.plainSize}`);
      if (cipherSize(model.plainSize) !== size) return t.fail(`cipherSize(plaintextSize(${size})) = ${cipherSize(model.plainSize)}`);
      continue;
    }
    invalid++;
    if (quick !== undefined) return t.fail(`plaintextSizeOrUndefined(${size}) = ${quick}, model: ${model.invalid}`);
    let error: unknown;
    try {
      plaintextSize(size);
    } catch (e) {
      error = e;
    }
    if (model.invalid === 'short prefix' && !(error instanceof ShortPrefixError)) return t.fail(`plaintextSize(${size}) threw ${String(error)}, expected ShortPrefixError`);
    if (model.invalid === 'bad length') {
      if (!(error instanceof InvalidLengthError)) return t.fail(`plaintextSize(${size}) threw ${String(error)}, expected InvalidLengthError`);
      if (error.packageIndex !== model.brokenPackage) return t.fail(`plaintextSize(${size}) blames package ${error.packageIndex}, model ${model.brokenPackage}`);
    }
  }
  t.true(invalid > 100, `only ${invalid} invalid sizes were tried`);
});

test('every remainder of 1..32 bytes after whole packages is an invalid length', (t) => {
  for (const packages of [0, 1, 2, 1000]) {
    for (let rest = 1; rest <= 32; rest++) {
      const size = PREFIX + packages * PACKAGE + rest;
      t.is(plaintextSizeOrUndefined(size), undefined, `size ${size}`);
      const error = t.throws(() => plaintextSize(size), { instanceOf: InvalidLengthError });
      t.is(error?.packageIndex, packages);
    }
    t.is(plaintextSizeOrUndefined(PREFIX + packages * PACKAGE + 33), packages * PAYLOAD + 1);
  }
});

test('a file shorter than the 32-byte prefix is a ShortPrefixError, the bare prefix an empty plaintext', (t) => {
  for (let size = 0; size < PREFIX; size++) {
    t.is(plaintextSizeOrUndefined(size), undefined);
    const error = t.throws(() => plaintextSize(size), { instanceOf: ShortPrefixError });
    t.true(error instanceof DareError);
  }
  t.is(plaintextSize(PREFIX), 0);
});

test('the arithmetic stays exact for files of many GiB and TiB', (t) => {
  const random = seededRandom('large');
  for (let i = 0; i < 200; i++) {
    // Up to 2^44 bytes (16 TiB): well inside exact double arithmetic.
    const packages = random.int(1, 2 ** 28);
    const last = random.pick([0, 1, 2, random.int(1, PAYLOAD - 1), PAYLOAD - 1, PAYLOAD]);
    const size = packages * PAYLOAD + last;
    const count = packages + (last > 0 ? 1 : 0);
    const expected = BigInt(PREFIX) + BigInt(size) + BigInt(count) * BigInt(OVERHEAD);
    t.is(BigInt(cipherSize(size)), expected, `cipherSize(${size})`);
    t.is(plaintextSize(cipherSize(size)), size);
    t.is(packageIndex(size - 1), count - 1);
    t.is(BigInt(packageOffset(count - 1)), BigInt(PREFIX) + BigInt(count - 1) * BigInt(PACKAGE));
    t.is(payloadLength(count - 1, size), last === 0 ? PAYLOAD : last);
  }
});
