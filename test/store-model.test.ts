/**
 * Model-based random test of CipherFile: thousands of seeded operations on one file, compared with
 * a plain Buffer after every step, and the cipher file checked on disk (decryptStream, exact
 * cipher size, regular layout) after every flush, every 100 steps and at the end.
 * Reproduce a failure with STORE_SEED=<seed printed in the log>.
 */
import test, { ExecutionContext } from 'ava';
import * as path from 'node:path';
import { Cipher, MAX_PAYLOAD, Version } from '../src/dare';
import { CipherFile, StoreSettings, Volume } from '../src/store';
import {
  MasterKeys,
  Model,
  Rng,
  SETTINGS_KEEP_V20,
  SETTINGS_V10,
  firstDifference,
  inspectCipherFile,
  makeVolume,
  masterKeys,
  seedFor,
  tempDir,
  tempLeftovers,
  writeStreamFile,
} from './helpers/store';

interface Variant {
  seed: number;
  steps: number;
  settings: StoreSettings;
  dirtyBytes: number;
  cacheBytes: number;
  /** Plaintext size the test keeps the file under (roughly). */
  maxSize: number;
  /** Start from a file written by the streaming encoder in this version (else create empty). */
  initial?: { version: Version; size: number };
  /** Version every flushed stream must have. */
  diskVersion: Version;
  checkEvery: number;
}

const P = MAX_PAYLOAD;

async function runModel(t: ExecutionContext, v: Variant): Promise<void> {
  const seed = seedFor(v.seed);
  t.log(`seed ${seed} (STORE_SEED=${seed} to reproduce)`);
  const rng = new Rng(seed);
  const dir = tempDir(t, 'model');
  const cipherPath = path.join(dir, 'file.bin');
  const name = 'file.bin';
  const mk: MasterKeys = masterKeys(rng.bytes(32));
  const model = new Model();
  const newVolume = (): Volume => makeVolume(mk.keys, { settings: v.settings, dirtyBytes: v.dirtyBytes, packageCacheBytes: v.cacheBytes });
  let vol = newVolume();
  let file: CipherFile;
  if (v.initial) {
    const content = rng.bytes(v.initial.size);
    await writeStreamFile(cipherPath, content, mk, v.initial.version, v.settings.newFileCipher);
    model.write(0, content);
    file = await vol.open(cipherPath, name);
  } else {
    file = await vol.create(cipherPath, name, 0o600);
  }

  const history: string[] = [];
  const fail = (msg: string): never => {
    throw new Error(`seed ${seed}, step ${history.length}: ${msg}\nlast operations:\n  ${history.slice(-25).join('\n  ')}`);
  };
  const same = (actual: Buffer, expected: Buffer, what: string): void => {
    if (!actual.equals(expected)) {
      fail(`${what}: got ${actual.length} bytes, want ${expected.length}, first difference at ${firstDifference(actual, expected)}`);
    }
  };
  let diskChecks = 0;
  /** Whether the file was changed yet: undefined after only no-op changes (which may convert a 2.0 file or not). */
  let changed: boolean | undefined = false;
  const checkDisk = async (why: string): Promise<void> => {
    diskChecks++;
    let info;
    try {
      info = await inspectCipherFile(cipherPath, mk, model.data, false);
    } catch (err) {
      return fail(`disk check (${why}): ${(err as Error).message}`);
    }
    // Before the first change an existing file keeps its version; every change may convert it.
    const want = changed === true ? [v.diskVersion] : changed === false ? [v.initial?.version ?? v.diskVersion] : [v.diskVersion, v.initial?.version];
    if (model.data.length > 0 && !want.includes(info.version)) fail(`disk check (${why}): stream version 0x${info.version?.toString(16)}`);
    const left = tempLeftovers(dir);
    if (left.length > 0) fail(`temp files left behind: ${left.join(', ')}`);
  };
  const flushAndCheck = async (why: string): Promise<void> => {
    await file.flush();
    if (file.dirtyPackages !== 0) fail(`${file.dirtyPackages} dirty packages after flush`);
    await checkDisk(why);
  };

  // Offsets near package boundaries are where the arithmetic goes wrong.
  const nearBoundary = (): number => {
    const k = rng.range(0, Math.max(1, Math.ceil((model.data.length + 1) / P)));
    return Math.max(0, k * P + rng.pick([-1, 0, 1, -rng.range(1, 3000), rng.range(1, 3000)]));
  };

  try {
    for (let step = 1; step <= v.steps; step++) {
      const size = model.data.length;
      const r = rng.int(100);
      if (r < 30) {
        // many small writes anywhere in the file, a little past EOF at times
        const off = rng.chance(0.1) ? size + rng.int(100) : rng.int(size + 1);
        const data = rng.bytes(rng.range(1, 600));
        history.push(`write(${off}, ${data.length})`);
        const n = await file.write(off, data);
        if (n !== data.length) fail(`write returned ${n}`);
        model.write(off, data);
      } else if (r < 40) {
        // writes spanning a package boundary
        const off = Math.max(0, rng.range(0, Math.ceil(size / P) + 1) * P - rng.range(1, 4000));
        const data = rng.bytes(rng.range(2, 9000));
        history.push(`write(${off}, ${data.length}) spanning`);
        await file.write(off, data);
        model.write(off, data);
      } else if (r < 44) {
        // large writes, some exactly one aligned package
        const aligned = rng.chance(0.3);
        const off = aligned ? rng.range(0, Math.ceil(size / P)) * P : rng.int(size + 1);
        const data = rng.bytes(aligned ? P : rng.range(P / 2, 3 * P));
        history.push(`write(${off}, ${data.length}) large`);
        await file.write(off, data);
        model.write(off, data);
      } else if (r < 48) {
        // far past EOF: the gap must read back as zeros
        const off = size + rng.range(1, 5 * P);
        const data = rng.bytes(rng.range(1, 3000));
        history.push(`write(${off}, ${data.length}) past EOF`);
        await file.write(off, data);
        model.write(off, data);
      } else if (r < 51) {
        const off = size;
        const data = rng.bytes(rng.range(1, 20000));
        history.push(`append(${off}, ${data.length})`);
        await file.write(off, data);
        model.write(off, data);
      } else if (r < 60) {
        let to: number;
        const kind = rng.int(6);
        if (kind === 0) to = rng.int(size + 1);
        else if (kind === 1) to = size + rng.range(1, 4 * P);
        else if (kind === 2) to = Math.floor(rng.int(size + 2 * P) / P) * P;
        else if (kind === 3) to = nearBoundary();
        else if (kind === 4) to = rng.chance(0.2) ? 0 : Math.max(0, size - rng.range(1, 100));
        else to = size;
        history.push(`truncate(${to}) from ${size}`);
        await file.truncate(to);
        model.truncate(to);
      } else if (r < 83) {
        const off = rng.chance(0.2) ? nearBoundary() : rng.int(size + 2 * P);
        const len = rng.chance(0.1) ? rng.range(P, 3 * P) : rng.int(5000);
        history.push(`read(${off}, ${len})`);
        same(await file.read(off, len), model.read(off, len), `read(${off}, ${len})`);
      } else if (r < 90) {
        const sync = rng.chance(0.9) ? 'none' : rng.pick(['data', 'full'] as const);
        history.push(`flush(${sync})`);
        await file.flush(sync);
        if (file.dirtyPackages !== 0) fail(`${file.dirtyPackages} dirty packages after flush`);
        await checkDisk('flush');
      } else if (r < 94) {
        // close and reopen; sometimes in a fresh volume (a remount)
        const remount = rng.chance(0.5);
        history.push(`reopen${remount ? ' (new volume)' : ''}`);
        await vol.release(file);
        if (vol.openFiles !== 0) fail(`${vol.openFiles} files still open after the last release`);
        await checkDisk('close');
        if (remount) vol = newVolume();
        file = await vol.open(cipherPath, name);
      } else if (rng.chance(0.5)) {
        const off = rng.int(size + 1);
        const data = Buffer.from(model.read(off, rng.range(1, 2000)));
        history.push(data.length > 0 ? `write same bytes (${off}, ${data.length})` : 'nothing');
        if (data.length > 0) await file.write(off, data);
      } else {
        history.push('write(…, 0 bytes)');
        const off = size + rng.int(1000);
        if ((await file.write(off, Buffer.alloc(0))) !== 0) fail('empty write returned non-zero');
      }
      const last = history[history.length - 1];
      if (last === 'write(…, 0 bytes)' || last.startsWith(`truncate(${size}) from ${size}`)) changed ||= undefined;
      else if (/write|append|truncate/.test(last)) changed = true;
      if (file.size !== model.data.length) fail(`size ${file.size}, model ${model.data.length}`);
      if (model.data.length > v.maxSize) {
        const to = rng.int(v.maxSize / 2);
        history.push(`truncate(${to}) (size cap)`);
        await file.truncate(to);
        model.truncate(to);
      }
      if (step % v.checkEvery === 0) {
        same(await file.read(0, model.data.length + 10), model.data, 'whole-file read');
        await flushAndCheck(`step ${step}`);
      }
    }
    same(await file.read(0, model.data.length + 10), model.data, 'final whole-file read');
    await flushAndCheck('end');
    await vol.release(file);
    await checkDisk('final close');
    // A fresh volume opens it (header checks) and random-access reads it whole.
    const vol2 = newVolume();
    const again = await vol2.open(cipherPath, name);
    if (again.size !== model.data.length) fail(`reopened size ${again.size}`);
    same(await again.read(0, model.data.length), model.data, 'read after remount');
    await vol2.release(again);
  } catch (err) {
    if (!(err instanceof Error && err.message.startsWith(`seed ${seed}`))) {
      t.log(`last operations:\n  ${history.slice(-25).join('\n  ')}`);
    }
    throw err;
  }
  t.log(`${v.steps} steps, ${diskChecks} disk checks, final size ${model.data.length}, counters ${JSON.stringify(vol.counters)}`);
  t.pass();
}

const base = { maxSize: 40 * P, checkEvery: 100 };

test('model: 1.0 file, default budget and cache', (t) =>
  runModel(t, { ...base, seed: 0x5eed0001, steps: 3000, settings: SETTINGS_V10, dirtyBytes: 64 << 20, cacheBytes: 16 << 20, diskVersion: Version.V10 }));

test('model: tiny dirty budget (3 packages): flushes happen mid-write', (t) =>
  runModel(t, { ...base, seed: 0x5eed0002, steps: 3000, settings: SETTINGS_V10, dirtyBytes: 3 * P, cacheBytes: 16 << 20, diskVersion: Version.V10 }));

test('model: zero package cache, ChaCha20-Poly1305', (t) =>
  runModel(t, {
    ...base,
    seed: 0x5eed0003,
    steps: 2500,
    settings: { ...SETTINGS_V10, newFileCipher: Cipher.CHACHA20_POLY1305 },
    dirtyBytes: 64 << 20,
    cacheBytes: 0,
    diskVersion: Version.V10,
  }));

test('model: zero cache and 1-package dirty budget', (t) =>
  runModel(t, { ...base, seed: 0x5eed0004, steps: 2000, settings: SETTINGS_V10, dirtyBytes: P, cacheBytes: 0, diskVersion: Version.V10 }));

test('model: existing 2.0 file converted to 1.0 on first change, tiny budget', (t) =>
  runModel(t, {
    ...base,
    seed: 0x5eed0005,
    steps: 2000,
    settings: SETTINGS_V10,
    dirtyBytes: 3 * P,
    cacheBytes: 4 * P,
    initial: { version: Version.V20, size: 5 * P + 1234 },
    diskVersion: Version.V10,
  }));

test('model: existing 1.0 file (streaming encoder), small cache', (t) =>
  runModel(t, {
    ...base,
    seed: 0x5eed0006,
    steps: 2000,
    settings: SETTINGS_V10,
    dirtyBytes: 8 * P,
    cacheBytes: 2 * P,
    initial: { version: Version.V10, size: 7 * P },
    diskVersion: Version.V10,
  }));

test('model: keep-2.0 mode (every flush rewrites the stream)', (t) =>
  runModel(t, {
    seed: 0x5eed0007,
    steps: 1200,
    settings: SETTINGS_KEEP_V20,
    dirtyBytes: 3 * P,
    cacheBytes: 16 << 20,
    initial: { version: Version.V20, size: 3 * P + 77 },
    diskVersion: Version.V20,
    maxSize: 12 * P,
    checkEvery: 50,
  }));

test('model: keep-2.0 mode, new file', (t) =>
  runModel(t, {
    seed: 0x5eed0008,
    steps: 800,
    settings: SETTINGS_KEEP_V20,
    dirtyBytes: 64 << 20,
    cacheBytes: 0,
    diskVersion: Version.V20,
    maxSize: 10 * P,
    checkEvery: 50,
  }));
