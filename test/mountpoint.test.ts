import test from 'ava';
import { execFile, spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import {
  MountBusyError,
  MountpointError,
  checkMountpoint,
  findMount,
  isMounted,
  parseMountInfo,
  unescapeMountField,
  unmountPath,
} from '../src/fuse/mountpoint';
import {
  assertNoFuseMountsLeft,
  cleanupLeftovers,
  makeTestDirs,
  sleep,
  withMount,
  type DaemonSpecFactory,
} from './helpers/mount';

const FIXTURE = path.join(__dirname, 'fixtures', 'memfs-daemon.js');
const UMOUNT_SH = path.join(__dirname, '..', '..', 'scripts', 'umount.sh');
const memfs: DaemonSpecFactory = (dirs) => ({ command: process.execPath, args: [FIXTURE, dirs.mountpoint] });

function code(err: unknown): string | undefined {
  return err instanceof MountpointError ? err.code : undefined;
}

async function expectMountpointError(p: Promise<unknown>): Promise<MountpointError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof MountpointError) return err;
    throw err;
  }
  throw new Error('expected a MountpointError');
}

function runScript(args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    execFile('sh', [UMOUNT_SH, ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      const rc = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      resolve({ code: rc, output: `${stdout}${stderr}` });
    });
  });
}

test.after.always(async () => {
  await cleanupLeftovers();
});

test('parseMountInfo: octal escapes, optional fields, fs type and source', (t) => {
  t.timeout(10_000);
  const line =
    '42 27 0:39 / /tmp/a\\040dir/caf\\303\\251\\134x rw,nosuid,nodev,relatime shared:7 master:1 - fuse.darefs /srv/ci\\040pher rw,user_id=0,group_id=0';
  const [e] = parseMountInfo(line + '\n');
  t.is(e?.id, 42);
  t.is(e?.parentId, 27);
  t.is(e?.minor, 39);
  t.is(e?.mountPoint, '/tmp/a dir/café\\x');
  t.is(e?.fsType, 'fuse.darefs');
  t.is(e?.source, '/srv/ci pher');
  t.is(unescapeMountField('a\\011b\\012c'), 'a\tb\nc');
});

test.serial('checkMountpoint refuses a missing path, a file, a non-empty directory', async (t) => {
  t.timeout(30_000);
  const dirs = await makeTestDirs();
  try {
    const missing = path.join(dirs.root, 'nope');
    const e1 = await expectMountpointError(checkMountpoint(missing));
    t.is(e1.code, 'ENOENT');
    t.true(e1.message.includes(missing) && e1.message.includes('mkdir -p'), e1.message);

    const file = path.join(dirs.root, 'file');
    await fsp.writeFile(file, 'x');
    const e2 = await expectMountpointError(checkMountpoint(file));
    t.is(e2.code, 'NOTDIR');
    t.true(e2.message.includes(file), e2.message);

    await fsp.writeFile(path.join(dirs.cipherDir, 'something'), 'x');
    const e3 = await expectMountpointError(checkMountpoint(dirs.cipherDir));
    t.is(e3.code, 'NOTEMPTY');
    t.true(e3.message.includes(dirs.cipherDir), e3.message);

    t.is(await checkMountpoint(dirs.mountpoint), dirs.mountpoint);
    // Relative and symlinked spellings resolve to the same mount point.
    await fsp.symlink(dirs.root, path.join(dirs.root, 'link'));
    t.is(await checkMountpoint(path.join(dirs.root, 'link', 'mnt')), dirs.mountpoint);
  } finally {
    await fsp.rm(dirs.root, { recursive: true, force: true });
  }
});

test.serial('checkMountpoint refuses a live mount, names its type and what to run', async (t) => {
  t.timeout(30_000);
  await withMount(t, memfs, async (m) => {
    const err = await expectMountpointError(checkMountpoint(m.mountpoint));
    t.is(err.code, 'MOUNTED');
    t.is(err.message, `${m.mountpoint} is already a mount point (fuse.darefs): run \`darefs umount ${m.mountpoint}\` first`);
    // unmountPath on something that is not a mount point
    t.is(code(await unmountPath(m.root).catch((e: unknown) => e)), 'NOTMOUNTED');
  });
});

test.serial('checkMountpoint cleans a stale darefs mount and allows it', async (t) => {
  t.timeout(60_000);
  await withMount(t, memfs, async (m) => {
    await m.kill9();
    t.true(await isMounted(m.mountpoint));
    t.is(await checkMountpoint(m.mountpoint), m.mountpoint);
    t.false(await isMounted(m.mountpoint));
    await m.respawn();
    t.true(await isMounted(m.mountpoint));
  });
});

test.serial('busy unmount names the holder; unmount succeeds once it is gone', async (t) => {
  t.timeout(60_000);
  await withMount(t, memfs, async (m) => {
    const sleeper = spawn('sleep', ['30'], { cwd: m.mountpoint, stdio: 'ignore' });
    const sleeperExit = new Promise((resolve) => sleeper.once('exit', resolve));
    try {
      // spawn returns before the child has chdir'ed and exec'ed: wait until it is `sleep` in there.
      for (let i = 0; i < 100; i++) {
        const comm = await fsp.readFile(`/proc/${sleeper.pid}/comm`, 'utf8').catch(() => '');
        if (comm.trim() === 'sleep') break;
        await sleep(20);
      }
      const err = await expectMountpointError(unmountPath(m.mountpoint));
      t.true(err instanceof MountBusyError, err.message);
      const holders = (err as MountBusyError).holders;
      const holder = holders.find((h) => h.pid === sleeper.pid);
      t.truthy(holder, JSON.stringify(holders));
      t.is(holder?.comm, 'sleep');
      t.true(holder?.uses.includes('cwd'));
      t.true(err.message.includes(`pid ${sleeper.pid} (sleep)`), err.message);
      t.true(err.message.includes(m.mountpoint), err.message);
      t.true(await isMounted(m.mountpoint), 'still mounted after a refused unmount');
      t.is(await fsp.readFile(`/proc/${sleeper.pid}/comm`, 'utf8'), 'sleep\n');

      const script = await runScript([m.mountpoint]);
      t.is(script.code, 2, script.output);
      t.regex(script.output, /busy/);
      t.true(script.output.includes(String(sleeper.pid)) || script.output.includes('sleep'), script.output);
    } finally {
      sleeper.kill('SIGKILL');
      await sleeperExit;
    }
    // Unmounted from outside (as `darefs umount` does): the daemon notices and exits cleanly.
    await unmountPath(m.mountpoint);
    t.false(await isMounted(m.mountpoint));
    const exit = await Promise.race([m.daemon.exited, sleep(10_000).then(() => 'timeout')]);
    t.deepEqual(exit, { code: 0, signal: null }, m.output());
    t.regex(m.output(), /unmounted externally/);
  });
});

test.serial('scripts/umount.sh unmounts a live mount and refuses a non-mount', async (t) => {
  t.timeout(30_000);
  await withMount(t, memfs, async (m) => {
    const res = await runScript([m.mountpoint]);
    t.is(res.code, 0, res.output);
    t.is(await findMount(m.mountpoint), undefined);
    const again = await runScript([m.mountpoint]);
    t.is(again.code, 1);
    t.regex(again.output, /not mounted/);
    await Promise.race([m.daemon.exited, sleep(10_000)]);
    t.deepEqual(m.daemon.exit, { code: 0, signal: null }, m.output());
  });
});

test.serial('no FUSE mount left behind by this file', async (t) => {
  t.timeout(10_000);
  await assertNoFuseMountsLeft();
  t.pass();
});
