/**
 * ENOSPC (issue 4, Failures): with a small tmpfs as cipher directory, a flush that runs out of
 * space fails cleanly, and the file reads back exactly as before the failed writes, as a valid
 * stream (no torn package, no temp file left). Needs root for the tmpfs; otherwise logs and passes.
 */
import test, { ExecutionContext } from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MAX_PAYLOAD, Version, cipherSize } from '../src/dare';
import { CipherFile, Volume } from '../src/store';
import {
  MasterKeys,
  Rng,
  SETTINGS_KEEP_V20,
  SETTINGS_V10,
  inspectCipherFile,
  makeVolume,
  masterKeys,
  seedFor,
  tempLeftovers,
  tmpfsDir,
  writeStreamFile,
} from './helpers/store';

const P = MAX_PAYLOAD;

function isEnospc(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as NodeJS.ErrnoException).code === 'ENOSPC';
}

interface Setup {
  dir: string;
  rng: Rng;
  mk: MasterKeys;
  cipherPath: string;
}

function setup(t: ExecutionContext, seedBase: number): Setup | undefined {
  const seed = seedFor(seedBase);
  t.log(`seed ${seed}`);
  const dir = tmpfsDir(t, '2m');
  if (dir === undefined) return undefined;
  const rng = new Rng(seed);
  return { dir, rng, mk: masterKeys(rng.bytes(32)), cipherPath: path.join(dir, 'fill.bin') };
}

/** Appends `chunk`-byte pieces, flushing after each, until a flush fails; returns what is on disk. */
async function fillUntilEnospc(t: ExecutionContext, file: CipherFile, rng: Rng, base: Buffer, chunk: number): Promise<Buffer> {
  let good = base;
  for (let i = 0; i < 64; i++) {
    const data = rng.bytes(chunk);
    await file.write(good.length, data);
    try {
      await file.flush();
    } catch (err) {
      if (!isEnospc(err)) throw err;
      t.log(`ENOSPC after ${good.length} bytes`);
      return good;
    }
    good = Buffer.concat([good, data]);
  }
  throw new Error('the tmpfs never filled up');
}

async function expectOnDisk(t: ExecutionContext, s: Setup, expected: Buffer, settings = SETTINGS_V10): Promise<void> {
  t.is(fs.statSync(s.cipherPath).size, cipherSize(expected.length), 'cipher size of the content before the failed writes');
  await t.notThrowsAsync(inspectCipherFile(s.cipherPath, s.mk, expected), 'decrypts (decryptStream) to the content before the failed writes');
  const vol: Volume = makeVolume(s.mk.keys, { settings });
  const again = await vol.open(s.cipherPath, 'fill.bin');
  t.is(again.size, expected.length);
  t.true((await again.read(0, expected.length + 1)).equals(expected), 'reopened file reads back whole');
  await vol.release(again);
  t.deepEqual(tempLeftovers(s.dir), [], 'no temp file left');
}

test('ENOSPC: appending flushes fail cleanly; the file reads back exactly as before, and stays usable', async (t) => {
  const s = setup(t, 0xe0501001);
  if (!s) return t.pass();
  const vol = makeVolume(s.mk.keys);
  const file = await vol.create(s.cipherPath, 'fill.bin', 0o600);
  try {
    const base = s.rng.bytes(600 * 1024 + 123);
    await file.write(0, base);
    await file.flush();
    const good = await fillUntilEnospc(t, file, s.rng, base, 100 * 1024 + 7);
    t.is(file.size, good.length, 'the object is back at the size on disk');
    t.true((await file.read(0, good.length + 10)).equals(good), 'and reads what is on disk');
    await expectOnDisk(t, s, good);
    // Still usable: a small in-place change fits.
    await file.write(5, Buffer.from('still works'));
    await file.flush();
    Buffer.from('still works').copy(good, 5);
    await expectOnDisk(t, s, good);
  } finally {
    await vol.release(file).catch(() => undefined);
  }
});

test('ENOSPC: a flush that changes packages in place AND grows the file leaves the old content whole', async (t) => {
  const s = setup(t, 0xe0501002);
  if (!s) return t.pass();
  const vol = makeVolume(s.mk.keys);
  const file = await vol.create(s.cipherPath, 'fill.bin', 0o600);
  try {
    const base = s.rng.bytes(P + 50);
    await file.write(0, base);
    await file.flush();
    const good = await fillUntilEnospc(t, file, s.rng, base, 3 * P);
    // In-place changes to early packages, then growth past what fits, flushed together.
    await file.write(10, s.rng.bytes(100));
    await file.write(2 * P + 10, s.rng.bytes(P)); // spans packages 2 and 3
    await file.write(good.length - 3, s.rng.bytes(4 * P));
    const err = await t.throwsAsync(file.flush());
    t.true(isEnospc(err), String(err));
    await expectOnDisk(t, s, good);
    t.true((await file.read(0, good.length + 10)).equals(good), 'the open object reads the old content too');
  } finally {
    await vol.release(file).catch(() => undefined);
  }
});

test('ENOSPC: with a tiny dirty budget the failing write itself rejects; the file is as before that write', async (t) => {
  const s = setup(t, 0xe0501003);
  if (!s) return t.pass();
  const vol = makeVolume(s.mk.keys, { dirtyBytes: 2 * P });
  const file = await vol.create(s.cipherPath, 'fill.bin', 0o600);
  let good = Buffer.alloc(0);
  try {
    let failed = false;
    for (let i = 0; i < 64 && !failed; i++) {
      const data = s.rng.bytes(3 * P + 11); // over the budget: each write ends with a flush
      try {
        await file.write(good.length, data);
        good = Buffer.concat([good, data]);
      } catch (err) {
        t.true(isEnospc(err), String(err));
        failed = true;
      }
    }
    t.true(failed, 'the tmpfs filled up');
    t.is(file.size, good.length);
    await expectOnDisk(t, s, good);
    // Growing with zeros far past EOF fails the same way.
    await t.throwsAsync(file.truncate(good.length + 4 * 1024 * 1024), { code: 'ENOSPC' });
    await expectOnDisk(t, s, good);
  } finally {
    await vol.release(file).catch(() => undefined);
  }
});

test('ENOSPC: converting a 2.0 file that does not fit twice fails the write, keeps the 2.0 file, leaves no temp file', async (t) => {
  const s = setup(t, 0xe0501004);
  if (!s) return t.pass();
  const content = s.rng.bytes(1200 * 1024);
  await writeStreamFile(s.cipherPath, content, s.mk, Version.V20);
  const before = fs.readFileSync(s.cipherPath);
  for (const settings of [SETTINGS_V10, SETTINGS_KEEP_V20]) {
    const vol = makeVolume(s.mk.keys, { settings });
    const file = await vol.open(s.cipherPath, 'fill.bin');
    try {
      if (settings === SETTINGS_V10) {
        const err = await t.throwsAsync(file.write(100, Buffer.from('change')));
        t.true(isEnospc(err), String(err));
      } else {
        await file.write(100, Buffer.from('change'));
        const err = await t.throwsAsync(file.flush());
        t.true(isEnospc(err), String(err));
      }
      t.is(file.streamVersion, Version.V20);
      t.true(fs.readFileSync(s.cipherPath).equals(before), 'the 2.0 file is untouched');
      t.deepEqual(tempLeftovers(s.dir), [], 'no temp file left');
    } finally {
      await vol.release(file).catch(() => undefined);
    }
    await expectOnDisk(t, s, content, settings);
  }
});
