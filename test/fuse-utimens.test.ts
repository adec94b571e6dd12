/**
 * utimens end to end: fuse-native patched at install (scripts/patch-fuse-native.js) passes atime
 * and mtime exactly (seconds, nanoseconds, UTIME_NOW / UTIME_OMIT) to FuseMount, which decodes
 * them (src/fuse/native.ts); darefs applies them to the cipher file with utimensat (its addon,
 * native/darefs_sys). The patched binary also takes stat times as exact nanoseconds.
 *
 * Precision, as measured here:
 * - what the handler receives: exact nanoseconds (memfs fixture records it);
 * - the cipher file: nanoseconds (microseconds without the addon: Node's lutimes takes float
 *   seconds and libuv truncates to µs);
 * - stat through the mount: nanoseconds (stock fuse-native: milliseconds).
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { decodeStockUtimensMs, decodeTimespec, fusePatchGaps, fuseStatExact, fuseUtimensExact } from '../src/fuse/native';
import { UTIME_NOW, UTIME_OMIT } from '../src/fuse/native-types';
import { darefsMount, writeNcryptFile, writePassfile } from './helpers/darefs';
import { assertNoFuseMountsLeft, cleanupLeftovers, withMount, type DaemonSpecFactory } from './helpers/mount';

const FIXTURE = path.join(__dirname, 'fixtures', 'memfs-daemon.js');
const memfs: DaemonSpecFactory = (dirs) => ({ command: process.execPath, args: [FIXTURE, dirs.mountpoint] });

/** 2020-01-01T00:00:00Z */
const T2020 = 1577836800n;
const NS = 1_000_000_000n;

function run(file: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: 20_000, env: { ...process.env, TZ: 'UTC', LC_ALL: 'C' } }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${file} ${args.join(' ')}: ${err.message}\n${String(stderr)}`));
      else resolve(String(stdout));
    });
  });
}

const touch = (...args: string[]): Promise<string> => run('touch', args);

async function times(file: string): Promise<{ atime: bigint; mtime: bigint }> {
  const st = await fsp.lstat(file, { bigint: true });
  return { atime: st.atimeNs, mtime: st.mtimeNs };
}

/** Truncated to whole µs, as the fallback without the addon stores it. */
const us = (ns: bigint): bigint => (ns / 1000n) * 1000n;

async function lastUtimens(mnt: string): Promise<string | undefined> {
  const stats = JSON.parse(await fsp.readFile(path.join(mnt, '.stats'), 'utf8')) as { utimens: string[] };
  return stats.utimens.at(-1);
}

test.after.always(async () => {
  await cleanupLeftovers();
});

test('the loaded fuse-native is the patched build (npm install ran scripts/patch-fuse-native.js)', (t) => {
  t.timeout(10_000);
  t.true(fuseUtimensExact(), 'fuse-native unpatched: run `node scripts/patch-fuse-native.js`');
  t.true(fuseStatExact(), 'fuse-native built from an older patch: run `node scripts/patch-fuse-native.js`');
  t.deepEqual(fusePatchGaps(), [], 'nothing the patch adds is missing (the mount would warn)');
});

test('decodeTimespec: 64-bit seconds, nanoseconds, UTIME_NOW, UTIME_OMIT; stock ms fallback', (t) => {
  t.timeout(10_000);
  t.deepEqual(decodeTimespec(1577836800, 0, 123456789), { sec: T2020, nsec: 123456789 });
  t.deepEqual(decodeTimespec(0x0000_0001, 0x0000_0004, 5), { sec: (4n << 32n) + 1n, nsec: 5 });
  t.deepEqual(decodeTimespec(0xffff_ffff, -1, 500_000_000), { sec: -1n, nsec: 500_000_000 });
  t.deepEqual(decodeTimespec(0xffff_ffff, 0x7fff_ffff, 0), { sec: 2n ** 63n - 1n, nsec: 0 });
  t.deepEqual(decodeTimespec(0, -0x8000_0000, 0), { sec: -(2n ** 63n), nsec: 0 });
  t.is(decodeTimespec(0, 0, UTIME_NOW), 'now');
  t.is(decodeTimespec(0, 0, UTIME_OMIT), 'omit');
  t.deepEqual(decodeStockUtimensMs(1577836800123 % 2 ** 32, Math.floor(1577836800123 / 2 ** 32)), { sec: T2020, nsec: 123_000_000 });
  t.is(decodeStockUtimensMs(1073, 0), 'now');
});

test.serial('memfs: the handler gets both times to the nanosecond, and NOW / OMIT', async (t) => {
  t.timeout(60_000);
  await withMount(t, memfs, async (m) => {
    const f = path.join(m.mountpoint, 'f');
    await fsp.writeFile(f, 'x');
    await touch('-c', '-d', '2020-01-01 00:00:00.123456789', f);
    t.is(await lastUtimens(m.mountpoint), '/f 1577836800.123456789 1577836800.123456789');
    await touch('-c', '-m', '-d', '2020-01-01 00:00:01.000000001', f);
    t.is(await lastUtimens(m.mountpoint), '/f omit 1577836801.000000001');
    await touch('-c', '-a', '-d', '2020-01-01 00:00:02.999999999', f);
    t.is(await lastUtimens(m.mountpoint), '/f 1577836802.999999999 omit');
    // Before 1970 (negative tv_sec) and past 2^32 s (the high word).
    await touch('-c', '-d', '1960-01-01 00:00:00.25', f);
    t.is(await lastUtimens(m.mountpoint), '/f -315619200.250000000 -315619200.250000000');
    await touch('-c', '-d', '2500-01-01 00:00:00.000000007', f);
    t.is(await lastUtimens(m.mountpoint), '/f 16725225600.000000007 16725225600.000000007');
    // utimensat(UTIME_NOW, UTIME_NOW): the kernel sends FATTR_*_NOW or, without writeback cache,
    // its own clock; either way a time close to now, never the stale ms-of-atime value.
    const before = BigInt(Date.now()) * 1_000_000n;
    await touch('-c', f);
    const last = (await lastUtimens(m.mountpoint)) ?? '';
    const [, a, mt] = last.split(' ');
    for (const v of [a, mt]) {
      if (v === 'now') continue;
      const [sec, nsec] = v!.split('.');
      const ns = BigInt(sec!) * NS + BigInt(nsec!);
      t.true(ns >= before - 2n * NS && ns <= BigInt(Date.now()) * 1_000_000n + 2n * NS, `${last}: near now`);
    }
    // Through the mount (memfs keeps ms): both times, not the atime twice.
    await touch('-c', '-a', '-d', '2020-01-01 00:00:05', f);
    await touch('-c', '-m', '-d', '2020-01-01 00:00:09', f);
    t.deepEqual(await times(f), { atime: (T2020 + 5n) * NS, mtime: (T2020 + 9n) * NS });
  });
});

test.serial('darefs: touch -d / -m / -a / now / -h through the mount, exact to the nanosecond on the cipher files and through the mount', async (t) => {
  t.timeout(120_000);
  await withMount(
    t,
    darefsMount(['--ncrypt']),
    async (m) => {
      const f = path.join(m.mountpoint, 'f');
      const cf = path.join(m.cipherDir, 'f');
      const both = async (want: { atime: bigint; mtime: bigint }, what: string): Promise<void> => {
        t.deepEqual(await times(cf), want, `cipher file: ${what}`);
        t.deepEqual(await times(f), want, `through the mount: ${what}`);
      };

      // Both times from a fractional date.
      await touch('-d', '2020-01-01 00:00:00.123456789', f);
      const want = T2020 * NS + 123456789n;
      await both({ atime: want, mtime: want }, '-d');
      t.is((await run('stat', ['-c', '%x|%y', cf])).trim(), '2020-01-01 00:00:00.123456789 +0000|2020-01-01 00:00:00.123456789 +0000');

      // -m: mtime only, the atime is kept (UTIME_OMIT). -c: without it touch first opens the file
      // for writing, and darefs reading the cipher header on open bumps the cipher atime
      // (relatime): that is the open path, not utimens.
      const want2 = (T2020 + 3600n) * NS + 987654321n;
      await touch('-c', '-m', '-d', '2020-01-01 01:00:00.987654321', f);
      await both({ atime: want, mtime: want2 }, '-m');

      // -a: atime only.
      const want3 = (T2020 - 86400n) * NS + 1n;
      await touch('-c', '-a', '-d', '2019-12-31 00:00:00.000000001', f);
      await both({ atime: want3, mtime: want2 }, '-a');

      // Before 1970 (stock fuse-native's stat cannot say it; Node's lutimes would make it "now").
      await touch('-d', '1969-12-31 23:59:58.5', f);
      await both({ atime: -1_500_000_000n, mtime: -1_500_000_000n }, 'before 1970');

      // After 2262 (past signed 64-bit nanoseconds; ext4 keeps times until 2446).
      const y2300 = 10413792000n * NS + 250_000_000n;
      await touch('-d', '2300-01-01 00:00:00.25', f);
      await both({ atime: y2300, mtime: y2300 }, 'after 2262');

      // No date: now, from the kernel's clock.
      const before = BigInt(Date.now()) * 1_000_000n;
      await touch(f);
      const after = BigInt(Date.now()) * 1_000_000n;
      for (const [name, v] of Object.entries(await times(cf))) {
        t.true(v >= before - 2n * NS && v <= after + 2n * NS, `${name} ${v} is now (${before}..${after})`);
      }

      // -h on a symlink: the link changes, its target does not.
      const target = (T2020 + 7n) * NS;
      await touch('-d', '2020-01-01 00:00:07', f);
      const link = path.join(m.mountpoint, 'link');
      await fsp.symlink('f', link);
      await touch('-h', '-d', '2021-06-01 12:00:00.5', link);
      const linkTime = 1622548800n * NS + 500_000_000n;
      t.deepEqual(await times(path.join(m.cipherDir, 'link')), { atime: linkTime, mtime: linkTime }, 'cipher symlink');
      t.deepEqual(await times(link), { atime: linkTime, mtime: linkTime }, 'symlink through the mount');
      t.deepEqual(await times(cf), { atime: target, mtime: target }, 'target unchanged');
      t.is(await fsp.readlink(link), 'f');
      t.is(await fsp.readFile(f, 'utf8'), 'plain text');

      // ctime: whatever the cipher inode says, to the nanosecond.
      t.is((await fsp.lstat(f, { bigint: true })).ctimeNs, (await fsp.lstat(cf, { bigint: true })).ctimeNs);
    },
    {
      setup: async (dirs) => {
        await writePassfile(dirs);
        await writeNcryptFile(path.join(dirs.cipherDir, 'f'), Buffer.from('plain text'));
      },
    },
  );
});

test.serial('darefs without native/darefs_sys: times reach the cipher file to the microsecond (lutimes)', async (t) => {
  t.timeout(60_000);
  await withMount(
    t,
    darefsMount(['--ncrypt'], { DAREFS_NO_NATIVE: '1' }),
    async (m) => {
      const f = path.join(m.mountpoint, 'f');
      await touch('-d', '2020-01-01 00:00:00.123456789', f);
      const want = us(T2020 * NS + 123456789n);
      t.deepEqual(await times(path.join(m.cipherDir, 'f')), { atime: want, mtime: want });
      t.deepEqual(await times(f), { atime: want, mtime: want });
      await touch('-c', '-m', '-d', '1969-12-31 23:59:58.5', f);
      t.deepEqual(await times(f), { atime: want, mtime: -1_500_000_000n });
    },
    {
      setup: async (dirs) => {
        await writePassfile(dirs);
        await writeNcryptFile(path.join(dirs.cipherDir, 'f'), Buffer.from('plain text'));
      },
    },
  );
});

test.serial('no FUSE mount left behind by this file', async (t) => {
  t.timeout(10_000);
  await assertNoFuseMountsLeft();
  t.pass();
});
