import test from 'ava';
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { constants as osConstants } from 'node:os';
import * as path from 'node:path';
import { Errno } from '../src/fuse/native-types';
import { buildMountOptions, fuseNativeErrno, loadFuse } from '../src/fuse/native';
import { cleanStaleMount, isMounted, isStale, probePath } from '../src/fuse/mountpoint';
import { assertNoFuseMountsLeft, cleanupLeftovers, sleep, withMount, type DaemonSpecFactory } from './helpers/mount';

const FIXTURE = path.join(__dirname, 'fixtures', 'memfs-daemon.js');
const memfs: DaemonSpecFactory = (dirs) => ({
  command: process.execPath,
  args: [FIXTURE, dirs.mountpoint],
  env: { ...process.env, MEMFS_STATS_FILE: path.join(dirs.root, 'stats.json') },
});

interface MemfsStats {
  writes: number;
  writeSizes: Record<string, number>;
  writesByPath: Record<string, number[]>;
  maxWrite: number;
  fgetattrs: number;
}

async function readStats(mnt: string): Promise<MemfsStats> {
  return JSON.parse(await fsp.readFile(path.join(mnt, '.stats'), 'utf8')) as MemfsStats;
}

function runDd(args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn('dd', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('exit', (code) => resolve({ code, output }));
  });
}

test.after.always(async () => {
  await cleanupLeftovers();
});

test('Errno: negative, equal to fuse-native constants and -os.constants.errno', (t) => {
  t.timeout(10_000);
  t.truthy(loadFuse().Fuse);
  const osErrno = osConstants.errno as Record<string, number>;
  for (const [name, value] of Object.entries(Errno)) {
    t.true(value < 0, name);
    t.is(fuseNativeErrno(name), value, `Fuse.${name}`);
    t.is(-osErrno[name]!, value, `os.constants.errno.${name}`);
  }
});

test('buildMountOptions: big writes, timeouts in seconds, ro, escaping', (t) => {
  t.timeout(10_000);
  t.deepEqual(buildMountOptions({}), [
    'subtype=darefs',
    'big_writes',
    'max_write=131072',
    'attr_timeout=1',
    'entry_timeout=1',
    'negative_timeout=0',
  ]);
  const opts = buildMountOptions({ readOnly: true, allowOther: true, fsname: 'a,b\\c', attrTimeout: 0, kernelCache: true });
  t.true(opts.includes('ro'));
  t.true(opts.includes('allow_other'));
  t.true(opts.includes('fsname=a_b_c'));
  t.true(opts.includes('attr_timeout=0'));
  t.true(opts.includes('kernel_cache'));
  t.throws(() => buildMountOptions({ subtype: 'x,debug' }));
});

test.serial('memfs: write, read back, list, rename, unlink through the mount', async (t) => {
  t.timeout(60_000);
  await withMount(t, memfs, async (m) => {
    t.is(m.entry.fsType, 'fuse.darefs');
    const file = path.join(m.mountpoint, 'hello.txt');
    const data = Buffer.from('hello through fuse-native\n'.repeat(1000));
    await fsp.writeFile(file, data);
    t.deepEqual(await fsp.readFile(file), data);
    t.is((await fsp.stat(file)).size, data.length);
    await fsp.mkdir(path.join(m.mountpoint, 'dir'));
    await fsp.rename(file, path.join(m.mountpoint, 'dir', 'moved.txt'));
    t.deepEqual((await fsp.readdir(m.mountpoint)).sort(), ['dir']);
    t.deepEqual(await fsp.readFile(path.join(m.mountpoint, 'dir', 'moved.txt')), data);
    await fsp.unlink(path.join(m.mountpoint, 'dir', 'moved.txt'));
    await fsp.rmdir(path.join(m.mountpoint, 'dir'));
    t.deepEqual(await fsp.readdir(m.mountpoint), []);
  });
});

test.serial('big_writes: a 1 MiB write arrives as 8 write calls of 128 KiB', async (t) => {
  t.timeout(60_000);
  await withMount(t, memfs, async (m) => {
    const fh = await fsp.open(path.join(m.mountpoint, 'big.bin'), 'w');
    const block = Buffer.alloc(1 << 20, 0xa5);
    await fh.write(block, 0, block.length, 0);
    // fstat right after a write goes to fgetattr (attributes were invalidated by the write).
    t.is((await fh.stat()).size, 1 << 20);
    await fh.close();
    const stats = await readStats(m.mountpoint);
    t.deepEqual(stats.writesByPath['/big.bin'], Array<number>(8).fill(131072));
    t.true(stats.fgetattrs > 0, 'fstat reached ops.fgetattr with the handle');

    const dd = await runDd(['if=/dev/zero', `of=${path.join(m.mountpoint, 'dd.bin')}`, 'bs=1M', 'count=4']);
    t.is(dd.code, 0, dd.output);
    const after = await readStats(m.mountpoint);
    t.deepEqual(after.writesByPath['/dd.bin'], Array<number>(32).fill(131072));
    t.is(after.maxWrite, 131072);
  });
});

test.serial('a throwing handler answers EIO instead of wedging the request', async (t) => {
  t.timeout(30_000);
  await withMount(t, memfs, async (m) => {
    const err = await t.throwsAsync(fsp.stat(path.join(m.mountpoint, '.throw')));
    t.is((err as NodeJS.ErrnoException | undefined)?.code, 'EIO');
    // The daemon's stderr line may arrive a moment after the errno did.
    for (let i = 0; i < 100 && !/getattr handler failed/.test(m.output()); i++) await sleep(20);
    t.regex(m.output(), /getattr handler failed: deliberate failure/);
    // The mount still answers.
    await fsp.writeFile(path.join(m.mountpoint, 'after'), 'ok');
    t.is(await fsp.readFile(path.join(m.mountpoint, 'after'), 'utf8'), 'ok');
  });
});

test.serial('per-op timeouts: a slow getattr times out, a slow write does not', async (t) => {
  t.timeout(30_000);
  const spec: DaemonSpecFactory = (dirs) => {
    const base = memfs(dirs);
    return { ...base, env: { ...base.env, MEMFS_SLOW_MS: '1500', MEMFS_OPTIONS: JSON.stringify({ opTimeoutMs: 300 }) } };
  };
  await withMount(t, spec, async (m) => {
    const err = await t.throwsAsync(fsp.stat(path.join(m.mountpoint, '.slow')));
    t.is((err as NodeJS.ErrnoException | undefined)?.code, 'ETIMEDOUT');
    const started = Date.now();
    await fsp.writeFile(path.join(m.mountpoint, 'slow.bin'), 'late but fine');
    t.true(Date.now() - started >= 1400, 'the write waited for its handler');
    t.is(await fsp.readFile(path.join(m.mountpoint, 'slow.bin'), 'utf8'), 'late but fine');
  });
});

test.serial('SIGTERM unmounts cleanly: exit 0, no mount left', async (t) => {
  t.timeout(30_000);
  await withMount(t, memfs, async (m) => {
    await fsp.writeFile(path.join(m.mountpoint, 'x'), 'x');
    const exit = await m.stop();
    t.deepEqual(exit, { code: 0, signal: null }, m.output());
    t.regex(m.output(), /unmounted/);
    t.false(await isMounted(m.mountpoint));
    const stats = JSON.parse(await fsp.readFile(path.join(m.root, 'stats.json'), 'utf8')) as MemfsStats;
    t.is(stats.writes, 1);
  });
});

test.serial('kill -9 leaves a stale mount; cleanStaleMount fixes it; remount on the same path works', async (t) => {
  t.timeout(60_000);
  await withMount(t, memfs, async (m) => {
    await fsp.writeFile(path.join(m.mountpoint, 'x'), 'x');
    const exit = await m.kill9();
    t.is(exit.signal, 'SIGKILL');
    t.true(await isMounted(m.mountpoint), 'the mount outlives its daemon');
    t.deepEqual(await probePath(m.mountpoint), { state: 'stale' });
    t.true(await isStale(m.mountpoint));
    t.true(await cleanStaleMount(m.mountpoint));
    t.false(await isMounted(m.mountpoint));
    t.false(await cleanStaleMount(m.mountpoint), 'nothing left to clean');

    await m.respawn();
    await fsp.writeFile(path.join(m.mountpoint, 'y'), 'second life');
    t.is(await fsp.readFile(path.join(m.mountpoint, 'y'), 'utf8'), 'second life');
  });
});

test.serial('no FUSE mount left behind by this file', async (t) => {
  t.timeout(10_000);
  await assertNoFuseMountsLeft();
  t.pass();
});
