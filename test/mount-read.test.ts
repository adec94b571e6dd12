import test from 'ava';
import { execFile } from 'node:child_process';
import * as crypto from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { CLI, darefsMount, prng, writeNcryptFile, writePassfile } from './helpers/darefs';
import { assertNoFuseMountsLeft, makeTestDirs, withMount } from './helpers/mount';
import { loadManifest, vectorPath } from './helpers/vectors';

const manifest = loadManifest();
const ncryptOk = manifest.filter((e) => e.mode === 'ncrypt' && e.expect === 'ok' && e.password === 'correct horse battery staple');
const tampered = manifest.filter((e) => e.mode === 'ncrypt' && e.expect === 'error' && e.password === 'correct horse battery staple' && e.errorSource === undefined);
// A valid 1.0 stream whose middle packages are short: the offset arithmetic cannot serve it.
const IRREGULAR = 'odd-v10-short-packages.dare';

async function copyVectors(dir: string, names: string[]): Promise<void> {
  for (const name of new Set(names)) await fsp.copyFile(vectorPath(name), path.join(dir, name));
}

/**
 * Reads to the end with read(2) calls the way cat does. (fs.readFile stops at the first short
 * read, and the kernel returns the bytes before a failing page as a short read.)
 */
async function readErrno(file: string): Promise<string> {
  try {
    const fh = await fsp.open(file, 'r');
    try {
      const buf = Buffer.alloc(1 << 20);
      while ((await fh.read(buf, 0, buf.length, null)).bytesRead > 0);
    } finally {
      await fh.close();
    }
    return 'ok';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}

test.after.always(async () => {
  await assertNoFuseMountsLeft();
});

test.serial('every ok ncrypt vector reads back exactly through the mount; the irregular one is EIO', async (t) => {
  t.timeout(120_000);
  await withMount(
    t,
    darefsMount(['--ncrypt']),
    async (m) => {
      for (const e of ncryptOk) {
        const got = path.join(m.mountpoint, e.file);
        if (e.file === IRREGULAR) {
          t.is(await readErrno(got), 'EIO', e.file);
          continue;
        }
        const want = await fsp.readFile(vectorPath(e.plaintext!));
        t.is((await fsp.stat(got)).size, want.length, `${e.file} size from the cipher size`);
        t.true((await fsp.readFile(got)).equals(want), e.file);
      }
    },
    {
      setup: async (dirs) => {
        await writePassfile(dirs);
        await copyVectors(dirs.cipherDir, ncryptOk.map((e) => e.file));
      },
    },
  );
});

test.serial('tampered and invalid vectors fail with EIO and never return bytes of the bad package', async (t) => {
  t.timeout(120_000);
  await withMount(
    t,
    darefsMount(['--ncrypt']),
    async (m) => {
      for (const e of tampered) {
        const file = path.join(m.mountpoint, e.file);
        t.is(await readErrno(file), 'EIO', e.file);
        // Reading package by package: every package before the first bad one may succeed (and
        // is then the true plaintext), no read at or after it returns data.
        const fh = await fsp.open(file, 'r').catch(() => undefined);
        if (!fh) continue;
        try {
          const derived = e.derivedFrom ? await fsp.readFile(vectorPath(e.derivedFrom.replace(/^ncrypt-(v\d+)-(\w+)-(\d+)\.dare$/, 'pt-$3.bin'))) : undefined;
          for (let i = 0; i < 5; i++) {
            const buf = Buffer.alloc(65536);
            const res = await fh.read(buf, 0, buf.length, i * 65536).catch((err: NodeJS.ErrnoException) => err.code ?? String(err));
            if (typeof res === 'string') {
              t.is(res, 'EIO', `${e.file} package ${i}`);
              continue;
            }
            if (res.bytesRead > 0 && derived) {
              t.true(buf.subarray(0, res.bytesRead).equals(derived.subarray(i * 65536, i * 65536 + res.bytesRead)), `${e.file}: package ${i} is true plaintext`);
            }
          }
        } finally {
          await fh.close();
        }
      }
      t.regex(m.output(), /authentication failed in package 1 of \/neg-v20-flip-payload\.dare/);
    },
    {
      setup: async (dirs) => {
        await writePassfile(dirs);
        await copyVectors(dirs.cipherDir, tampered.map((e) => e.file));
      },
    },
  );
});

test.serial('seeded random ranges of a multi-MiB file equal the plaintext, both versions', async (t) => {
  t.timeout(120_000);
  const seed = Number(process.env.DAREFS_SEED ?? Date.now() % 100000);
  t.log(`seed ${seed}`);
  const rand = prng(seed);
  const plain = crypto.randomBytes(5 * 1024 * 1024 + 12345);
  await withMount(
    t,
    darefsMount(['--ncrypt']),
    async (m) => {
      for (const name of ['v10.bin', 'v20.bin']) {
        const fh = await fsp.open(path.join(m.mountpoint, name), 'r');
        try {
          for (let i = 0; i < 300; i++) {
            const near = Math.floor(rand() * 90) * 65536 + Math.floor(rand() * 64) - 32;
            const offset = Math.max(0, rand() < 0.5 ? near : Math.floor(rand() * (plain.length + 100000)));
            const length = 1 + Math.floor(rand() * (rand() < 0.3 ? 300000 : 5000));
            const buf = Buffer.alloc(length);
            const { bytesRead } = await fh.read(buf, 0, length, offset);
            const want = plain.subarray(Math.min(offset, plain.length), Math.min(offset + length, plain.length));
            t.is(bytesRead, want.length, `${name} read ${length} at ${offset}`);
            if (!buf.subarray(0, bytesRead).equals(want)) t.fail(`${name}: bytes differ for ${length} at ${offset}`);
          }
        } finally {
          await fh.close();
        }
      }
    },
    {
      setup: async (dirs) => {
        await writePassfile(dirs);
        await writeNcryptFile(path.join(dirs.cipherDir, 'v20.bin'), plain);
        const { Version } = await import('../src/dare');
        await writeNcryptFile(path.join(dirs.cipherDir, 'v10.bin'), plain, Version.V10);
      },
    },
  );
});

test.serial('a wrong password is refused before anything is mounted', async (t) => {
  t.timeout(60_000);
  const dirs = await makeTestDirs();
  t.teardown(() => fsp.rm(dirs.root, { recursive: true, force: true }));
  await writePassfile(dirs, 'not the password');
  await copyVectors(dirs.cipherDir, ['ncrypt-v20-aes-100.dare']);
  const res = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    execFile(process.execPath, [CLI, 'mount', '-f', '--ncrypt', '--passfile', path.join(dirs.root, 'pass.txt'), dirs.cipherDir, dirs.mountpoint], { timeout: 30_000 }, (err, _out, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stderr: String(stderr) });
    });
  });
  t.not(res.code, 0);
  t.regex(res.stderr, /wrong password/i);
  t.notRegex(res.stderr, /not the password/);
  await assertNoFuseMountsLeft();
});

test.serial('kill -9 leaves a stale mount that the next mount on the same mount point cleans up', async (t) => {
  t.timeout(90_000);
  await withMount(
    t,
    darefsMount(['--ncrypt']),
    async (m) => {
      await m.kill9();
      // statfs, not stat: the kernel answers stat from its attribute cache for a while.
      t.is(await fsp.statfs(m.mountpoint).then(() => 'ok', (e: NodeJS.ErrnoException) => e.code), 'ENOTCONN');
      await m.respawn();
      const want = await fsp.readFile(vectorPath('pt-100.bin'));
      t.true((await fsp.readFile(path.join(m.mountpoint, 'ncrypt-v20-aes-100.dare'))).equals(want));
    },
    {
      setup: async (dirs) => {
        await writePassfile(dirs);
        await copyVectors(dirs.cipherDir, ['ncrypt-v20-aes-100.dare']);
      },
    },
  );
});
