/**
 * Nonce audit (FORMAT.md §5): never seal two different plaintexts under the same key and AEAD
 * nonce. Two independent checks:
 * - after every flush, every package of the cipher file is recorded as (prefix, AEAD nonce) →
 *   hash(header || ciphertext || tag); the same pair with two different sealed contents fails;
 * - every sealPackage call in this process (including packages sealed by mid-write flushes and
 *   later overwritten, which no scan sees) is recorded as (key, nonce) → hash(sealed output).
 * Reproduce a failure with STORE_SEED=<seed printed in the log>.
 */
import test, { ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import * as path from 'node:path';
import { HEADER_SIZE, MAX_PAYLOAD, Version, aeadNonce } from '../src/dare';
import darePackage = require('../src/dare/package');
import { CipherFile, StoreSettings, Volume } from '../src/store';
import {
  CipherFileInfo,
  MasterKeys,
  Model,
  Rng,
  SETTINGS_KEEP_V20,
  SETTINGS_V10,
  inspectCipherFile,
  makeVolume,
  masterKeys,
  seedFor,
  tempDir,
  writeStreamFile,
} from './helpers/store';

const P = MAX_PAYLOAD;

// ---- every seal in this worker ----

interface SealConflict {
  key: string;
  nonce: string;
  index: number;
}
const sealsByKeyNonce = new Map<string, string>();
const sealConflicts: SealConflict[] = [];
let sealCalls = 0;
const originalSeal = darePackage.sealPackage;
const auditedSeal: typeof originalSeal = (key, opts, plaintext) => {
  const out = originalSeal(key, opts, plaintext);
  sealCalls++;
  const nonce = aeadNonce(out.subarray(0, HEADER_SIZE), opts.index).toString('hex');
  const id = `${key.toString('hex')}:${nonce}`;
  const digest = createHash('sha256').update(out).digest('hex');
  const seen = sealsByKeyNonce.get(id);
  if (seen !== undefined && seen !== digest) sealConflicts.push({ key: key.toString('hex').slice(0, 16), nonce, index: opts.index });
  sealsByKeyNonce.set(id, digest);
  return out;
};
// The store calls sealPackage through the dare index's live binding, so this sees every seal.
Object.assign(darePackage, { sealPackage: auditedSeal });

// ---- scans of the file on disk ----

class DiskAudit {
  private readonly pairs = new Map<string, string>();
  readonly prefixes = new Set<string>();
  scans = 0;
  packagesSeen = 0;

  record(info: CipherFileInfo, fail: (msg: string) => never): void {
    this.scans++;
    const prefix = info.prefix.toString('hex');
    this.prefixes.add(prefix);
    for (const p of info.packages) {
      this.packagesSeen++;
      const id = `${prefix}:${p.nonce}`;
      const seen = this.pairs.get(id);
      if (seen !== undefined && seen !== p.sealed) {
        fail(`nonce reuse: prefix ${prefix.slice(0, 16)}…, package ${p.index}, AEAD nonce ${p.nonce} sealed two different contents`);
      }
      this.pairs.set(id, p.sealed);
    }
  }

  get distinctPairs(): number {
    return this.pairs.size;
  }
}

interface AuditVariant {
  seed: number;
  writes: number;
  settings: StoreSettings;
  dirtyBytes: number;
  maxSize: number;
  /** Start from a streaming-encoder file of this version and size. */
  initial?: { version: Version; size: number };
  /** Flush after 1..maxBetween writes. */
  maxBetween: number;
  expectVersion: Version;
}

async function runAudit(t: ExecutionContext, v: AuditVariant): Promise<void> {
  const seed = seedFor(v.seed);
  t.log(`seed ${seed} (STORE_SEED=${seed} to reproduce)`);
  const rng = new Rng(seed);
  const dir = tempDir(t, 'nonce');
  const cipherPath = path.join(dir, 'audited.bin');
  const name = 'audited.bin';
  const mk: MasterKeys = masterKeys(rng.bytes(32));
  const audit = new DiskAudit();
  const model = new Model();
  const conflictsBefore = sealConflicts.length;
  const callsBefore = sealCalls;
  const history: string[] = [];
  const fail = (msg: string): never => {
    throw new Error(`seed ${seed}, after ${history.length} operations: ${msg}\nlast operations:\n  ${history.slice(-15).join('\n  ')}`);
  };
  const scan = async (version = v.expectVersion): Promise<CipherFileInfo> => {
    let info: CipherFileInfo;
    try {
      info = await inspectCipherFile(cipherPath, mk, model.data);
    } catch (err) {
      return fail((err as Error).message);
    }
    audit.record(info, fail);
    if (model.data.length > 0 && info.version !== version) fail(`stream version 0x${info.version?.toString(16)}`);
    return info;
  };

  const newVolume = (): Volume => makeVolume(mk.keys, { settings: v.settings, dirtyBytes: v.dirtyBytes });
  let vol = newVolume();
  let file: CipherFile;
  if (v.initial) {
    const content = rng.bytes(v.initial.size);
    await writeStreamFile(cipherPath, content, mk, v.initial.version);
    model.write(0, content);
    file = await vol.open(cipherPath, name);
  } else {
    file = await vol.create(cipherPath, name, 0o600);
  }
  let lastPrefix = (await scan(v.initial?.version ?? v.expectVersion)).prefix.toString('hex');
  let prefixChanges = 0;
  let flushes = 0;
  let untilFlush = rng.range(1, v.maxBetween);
  for (let i = 0; i < v.writes; i++) {
    const size = model.data.length;
    const r = rng.int(100);
    if (r < 85 || size === 0) {
      const off = rng.chance(0.05) ? size + rng.int(3 * P) : rng.int(size + 1);
      const data = rng.bytes(rng.range(1, 400));
      history.push(`write(${off}, ${data.length})`);
      await file.write(off, data);
      model.write(off, data);
    } else if (r < 90) {
      // the same bytes again: re-sealing unchanged plaintext must still be safe
      const off = rng.int(size);
      const data = Buffer.from(model.read(off, rng.range(1, 300)));
      history.push(`rewrite same (${off}, ${data.length})`);
      await file.write(off, data);
    } else if (r < 96) {
      const to = rng.chance(0.5) ? rng.int(size + 1) : size + rng.range(1, P);
      history.push(`truncate(${to})`);
      await file.truncate(to);
      model.truncate(to);
    } else {
      history.push('reopen (new volume)');
      await vol.release(file);
      vol = newVolume();
      file = await vol.open(cipherPath, name);
    }
    if (model.data.length > v.maxSize) {
      const to = rng.int(v.maxSize / 2);
      history.push(`truncate(${to}) (size cap)`);
      await file.truncate(to);
      model.truncate(to);
    }
    if (--untilFlush <= 0 || i === v.writes - 1) {
      untilFlush = rng.range(1, v.maxBetween);
      history.push('flush');
      await file.flush();
      flushes++;
      const info = await scan();
      if (info.prefix.toString('hex') !== lastPrefix) prefixChanges++;
      lastPrefix = info.prefix.toString('hex');
    }
  }
  await vol.release(file);
  await scan();
  const conflicts = sealConflicts.slice(conflictsBefore);
  if (conflicts.length > 0) fail(`sealPackage reused a (key, nonce) for different content: ${JSON.stringify(conflicts.slice(0, 5))}`);
  // 1.0 re-seals in place under the same prefix; a 2.0 file gets one new stream when converted.
  const conversions = v.initial?.version === Version.V20 ? 1 : 0;
  if (v.expectVersion === Version.V10 && prefixChanges !== conversions) fail(`prefix changed ${prefixChanges} times, want ${conversions}`);
  if (v.expectVersion === Version.V20 && prefixChanges < flushes / 2) fail(`prefix changed only ${prefixChanges} times in ${flushes} flushes`);
  if (sealCalls === callsBefore) fail('the sealPackage audit hook saw no seal: it is not wired to the store any more');
  t.log(
    `${v.writes} operations, ${flushes} flushes, ${audit.scans} scans, ${audit.packagesSeen} packages scanned, ` +
      `${audit.distinctPairs} distinct (prefix, nonce), ${audit.prefixes.size} prefixes, ${sealCalls - callsBefore} seals audited in this worker`,
  );
  t.pass();
}

test('nonce audit: new 1.0 file, random small writes with flushes between', (t) =>
  runAudit(t, { seed: 0xa0d17001, writes: 3000, settings: SETTINGS_V10, dirtyBytes: 64 << 20, maxSize: 8 * P, maxBetween: 12, expectVersion: Version.V10 }));

test('nonce audit: 1.0 file with a 2-package dirty budget (seals mid-write)', (t) =>
  runAudit(t, { seed: 0xa0d17002, writes: 2500, settings: SETTINGS_V10, dirtyBytes: 2 * P, maxSize: 8 * P, maxBetween: 30, expectVersion: Version.V10 }));

test('nonce audit: 2.0 file converted to 1.0 on its first change', async (t) => {
  await runAudit(t, {
    seed: 0xa0d17003,
    writes: 2500,
    settings: SETTINGS_V10,
    dirtyBytes: 64 << 20,
    maxSize: 8 * P,
    maxBetween: 12,
    initial: { version: Version.V20, size: 4 * P + 100 },
    expectVersion: Version.V10,
  });
});

test('nonce audit: keep-2.0 mode, every flush writes a new stream', (t) =>
  runAudit(t, {
    seed: 0xa0d17004,
    writes: 1500,
    settings: SETTINGS_KEEP_V20,
    dirtyBytes: 64 << 20,
    maxSize: 4 * P,
    maxBetween: 8,
    initial: { version: Version.V20, size: 2 * P + 500 },
    expectVersion: Version.V20,
  }));

test('nonce audit: a 2.0 stream gets a new prefix on every flush that changed it, a 1.0 stream keeps its prefix', async (t) => {
  const seed = seedFor(0xa0d17005);
  t.log(`seed ${seed}`);
  const rng = new Rng(seed);
  const dir = tempDir(t, 'nonce-prefix');
  const mk = masterKeys(rng.bytes(32));
  for (const [settings, version, expectNewPrefix] of [
    [SETTINGS_KEEP_V20, Version.V20, true],
    [SETTINGS_V10, Version.V10, false],
  ] as const) {
    const cipherPath = path.join(dir, `f${version}.bin`);
    const content = rng.bytes(3 * P + 10);
    await writeStreamFile(cipherPath, content, mk, version);
    const vol = makeVolume(mk.keys, { settings });
    const file = await vol.open(cipherPath, 'f');
    let prev = (await inspectCipherFile(cipherPath, mk, content)).prefix;
    for (let i = 0; i < 20; i++) {
      const data = rng.bytes(rng.range(1, 100));
      const off = rng.int(content.length - data.length);
      await file.write(off, data);
      data.copy(content, off);
      await file.flush();
      const info = await inspectCipherFile(cipherPath, mk, content);
      t.is(!info.prefix.equals(prev), expectNewPrefix, `version 0x${version.toString(16)} flush ${i}`);
      t.is(info.version, version);
      prev = info.prefix;
    }
    // A flush with nothing changed writes nothing, so it needs no new stream.
    await file.flush();
    t.true((await inspectCipherFile(cipherPath, mk, content)).prefix.equals(prev), 'a flush without changes keeps the stream');
    await vol.release(file);
  }
});
