/**
 * The channel of darefs's own FUSE transport (src/fuse/kernel/channel.ts, native/darefs_fuse.c)
 * against the real kernel: mount(2) as root, fusermount3 as a user, the reader thread, replies,
 * unmount. The file system is answered by hand (test/helpers/fuse-null.ts) in this process, so
 * every access to the mount runs in a child process: a stat from this thread would wait for an
 * answer this thread has to give.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile, spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { Channel, closeMount, FuseChannelError, loadFuseAddon, openMount } from '../src/fuse/kernel/channel';
import { findMount } from '../src/fuse/mountpoint';
import { assertNoFuseMountsLeft, cleanupLeftovers, killAndLazyUnmount, makeTestDirs, type MountDirs } from './helpers/mount';
import { MAX_WRITE, OP, serveNull, WRITE_HEADER } from './helpers/fuse-null';
import { randomBytes } from 'node:crypto';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';

const ENODEV = os.constants.errno.ENODEV;
const EPERM = os.constants.errno.EPERM;
const CHILD = path.join(__dirname, 'helpers', 'kernel-channel-child.js');
const USER = 1000;

test.after.always(() => cleanupLeftovers());

function run(file: string, args: string[], opts: { cwd?: string } = {}): Promise<{ ok: boolean; out: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: 10_000, killSignal: 'SIGKILL', env: { ...process.env, LC_ALL: 'C' }, ...opts }, (err, stdout, stderr) => {
      resolve({ ok: !err, out: `${String(stdout)}${String(stderr)}`.trim() });
    });
  });
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<T>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Threads of this process named by the reader (pthread_setname_np "darefs-fuse"). */
async function readerThreads(): Promise<number> {
  let n = 0;
  for (const tid of await fsp.readdir('/proc/self/task')) {
    const comm = await fsp.readFile(`/proc/self/task/${tid}/comm`, 'utf8').catch(() => '');
    if (comm.trim() === 'darefs-fuse') n++;
  }
  return n;
}

/** Temp dirs whose mounts are always detached (umount -l) and which are always removed. */
async function dirsFor(t: ExecutionContext, cleanup?: () => void): Promise<MountDirs> {
  const dirs = await makeTestDirs();
  t.teardown(async () => {
    cleanup?.();
    await killAndLazyUnmount(-1, dirs.root);
    if (!(await findMount(dirs.mountpoint))) await fsp.rm(dirs.root, { recursive: true, force: true });
  });
  return dirs;
}

const req = (mountpoint: string) => ({ mountpoint, fsname: 'darefs-test', subtype: 'darefs', allowOther: false, defaultPermissions: true, readOnly: false });

test.serial('the addon loads', (t) => {
  const addon = loadFuseAddon();
  t.truthy(addon.calls, addon.calls ? '' : addon.reason);
});

test.serial('root: mount(2), INIT and GETATTR answered through the channel, stat from a child sees a directory, unmount ends the reader with ENODEV', async (t) => {
  t.timeout(60_000);
  let channel: Channel | undefined;
  const dirs = await dirsFor(t, () => channel?.close());
  const before = await readerThreads();

  const { fd, how } = await openMount(req(dirs.mountpoint));
  t.is(how, 'mount(2)');
  channel = new Channel(fd);
  const entry = await findMount(dirs.mountpoint);
  t.is(entry?.fsType, 'fuse.darefs');
  t.is(entry?.source, 'darefs-test');
  t.regex(entry?.superOptions ?? '', /user_id=0,group_id=0/);
  t.regex(entry?.superOptions ?? '', /default_permissions/);

  const server = serveNull(channel);
  t.is(await readerThreads(), before + 1, 'one reader thread runs');
  await within(server.initDone, 10_000, 'INIT');

  const stat = await run('stat', ['-c', '%F', dirs.mountpoint]);
  t.true(stat.ok, stat.out);
  t.is(stat.out, 'directory');
  t.true(server.opcodes.includes(OP.GETATTR), `opcodes seen: ${server.opcodes.join(',')}`);

  // More traffic, then every request handed over earlier must still hold its own bytes (they are
  // not views of a buffer the reader thread reuses).
  for (let i = 0; i < 5; i++) await run('stat', ['-f', dirs.mountpoint]);
  t.true(server.kept.length >= 3, `${server.kept.length} requests`);
  for (const { req, copy } of server.kept) t.true(req.equals(copy), `request ${copy.readUInt32LE(4)} changed after its batch`);
  t.true(server.kept.every(({ req }) => req.readUInt32LE(0) === req.length), 'each Buffer is exactly one request');

  // From this very thread: umount2(2) sends no request, so it cannot wait on our answer.
  await closeMount(dirs.mountpoint, { lazy: false });
  t.is(await within(server.ended, 10_000, 'onEnd after unmount'), ENODEV);
  t.is(await readerThreads(), before, 'the reader thread is gone');
  t.is(await findMount(dirs.mountpoint), undefined);
  t.deepEqual(server.writeErrors, []);
  channel.close();
  channel = undefined;
});

test.serial('stop() with no traffic returns at once, joins the thread and calls nothing more', async (t) => {
  t.timeout(60_000);
  let channel: Channel | undefined;
  const dirs = await dirsFor(t, () => channel?.close());
  const before = await readerThreads();
  const { fd } = await openMount(req(dirs.mountpoint));
  channel = new Channel(fd);
  const server = serveNull(channel);
  await within(server.initDone, 10_000, 'INIT');
  await new Promise((resolve) => setTimeout(resolve, 200)); // the thread is now blocked waiting
  t.is(await readerThreads(), before + 1);
  let endCalled = false;
  void server.ended.then(() => (endCalled = true));

  const started = process.hrtime.bigint();
  channel.close();
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  channel = undefined;
  t.true(ms < 500, `close took ${ms.toFixed(1)} ms`);
  t.is(await readerThreads(), before, 'the reader thread was joined');

  await closeMount(dirs.mountpoint, { lazy: false });
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.false(endCalled, 'onEnd is not called after stop()');
});

test.serial('a reader on a /dev/fuse descriptor that is not mounted ends with EPERM', async (t) => {
  t.timeout(30_000);
  const addon = loadFuseAddon().calls;
  if (!addon) return t.fail('addon missing');
  const before = await readerThreads();
  const channel = new Channel(addon.openDevice());
  try {
    const ended = new Promise<number>((resolve) => channel.start(() => t.fail('no request expected'), resolve));
    t.is(await within(ended, 5000, 'onEnd'), EPERM);
    t.is(await readerThreads(), before);
  } finally {
    channel.close();
  }
});

test.serial('unmount of a busy mount fails with code EBUSY; a lazy one detaches it and the reader ends when the last user leaves', async (t) => {
  t.timeout(60_000);
  let channel: Channel | undefined;
  const holders: Array<ReturnType<typeof spawn>> = [];
  const dirs = await dirsFor(t, () => {
    for (const h of holders) h.kill('SIGKILL');
    channel?.close();
  });
  const { fd } = await openMount(req(dirs.mountpoint));
  channel = new Channel(fd);
  const server = serveNull(channel);
  await within(server.initDone, 10_000, 'INIT');

  // Not spawn's cwd option: libuv's child would chdir before exec while this thread waits in
  // spawn, so nobody would answer the chdir's requests.
  const holder = spawn('sh', ['-c', 'cd "$1" && echo in && exec sleep 60', 'sh', dirs.mountpoint], { stdio: ['ignore', 'pipe', 'ignore'] });
  holders.push(holder);
  await within(new Promise((resolve, reject) => holder.stdout.once('data', resolve).once('error', reject)), 10_000, 'holder');

  const busy = await t.throwsAsync(closeMount(dirs.mountpoint, { lazy: false }), { instanceOf: FuseChannelError });
  t.is(busy?.code, 'EBUSY');
  t.true(busy?.message.includes(dirs.mountpoint), busy?.message);
  t.truthy(await findMount(dirs.mountpoint), 'still mounted');

  await closeMount(dirs.mountpoint, { lazy: true });
  t.is(await findMount(dirs.mountpoint), undefined, 'detached');
  let ended: number | undefined;
  void server.ended.then((e) => (ended = e));
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.is(ended, undefined, 'still served while the holder uses it');
  holder.kill('SIGKILL');
  t.is(await within(server.ended, 10_000, 'onEnd after the holder left'), ENODEV);
  channel.close();
  channel = undefined;
});

test.serial('mount errors name the mount point and keep the errno code; a NUL in a name is refused before mounting', async (t) => {
  t.timeout(30_000);
  const dirs = await dirsFor(t);
  const missing = path.join(dirs.root, 'no-such-dir');
  const err = await t.throwsAsync(openMount(req(missing)), { instanceOf: FuseChannelError });
  t.is(err?.code, 'ENOENT');
  t.true(err?.message.includes(missing), err?.message);

  const bad = await t.throwsAsync(openMount({ ...req(dirs.mountpoint), fsname: 'a\0b' }), { instanceOf: FuseChannelError });
  t.is(bad?.code, 'BADOPTION');
  t.is(await findMount(dirs.mountpoint), undefined);

  const notMounted = await t.throwsAsync(closeMount(dirs.mountpoint, { lazy: false }), { instanceOf: FuseChannelError });
  t.is(notMounted?.code, 'EINVAL');
});

for (const mode of ['idle-ref', 'idle-unref'] as const) {
  test.serial(`a ${mode === 'idle-ref' ? "ref'd reader keeps the process alive" : "unref'd reader lets the process exit"}`, async (t) => {
    t.timeout(60_000);
    const children: Array<ReturnType<typeof spawn>> = [];
    const dirs = await dirsFor(t, () => {
      for (const c of children) c.kill('SIGKILL');
    });
    const child = spawn(process.execPath, [CHILD, dirs.mountpoint, 'darefs-test', mode], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    await within(
      new Promise<void>((resolve, reject) => {
        child.stdout.on('data', () => out.includes('"init"') && resolve());
        void exited.then((code) => reject(new Error(`child exited (${String(code)}) before INIT: ${out}`)));
      }),
      20_000,
      'INIT in the child',
    );
    if (mode === 'idle-unref') {
      t.is(await within(exited, 10_000, 'exit of the unref\'d child'), 0, out);
    } else {
      const early = await Promise.race([exited, new Promise((resolve) => setTimeout(() => resolve('alive'), 1500))]);
      t.is(early, 'alive', out);
    }
  });
}

/** A full garbage collection, so that the reader gets back the buffers of dropped requests. */
function collectGarbage(): void {
  v8.setFlagsFromString('--expose-gc');
  (vm.runInNewContext('gc') as () => void)();
}

test.serial('1 MiB WRITE requests kept by JS stay intact while the reader reuses the buffers of dropped ones, and past the lending bound', async (t) => {
  t.timeout(120_000);
  let channel: Channel | undefined;
  const dirs = await dirsFor(t, () => channel?.close());
  const MiB = 1 << 20;
  // Distinct bytes everywhere, so that a request read into a buffer JS still holds shows.
  const source = randomBytes(96 * MiB);
  const sourceFile = path.join(dirs.root, 'source');
  await fsp.writeFile(sourceFile, source);
  const { fd } = await openMount(req(dirs.mountpoint));
  channel = new Channel(fd);
  // Round 0 keeps every WRITE (more than the reader lends at once: the rest are copies); later
  // rounds keep every other one and collect the rest, whose buffers are then read into again.
  let round = 0;
  let seen = 0;
  const server = serveNull(channel, (r) => r.readUInt32LE(4) === OP.WRITE && (round === 0 || seen++ % 2 === 0));
  await within(server.initDone, 10_000, 'INIT');
  const rounds = [
    { skip: 0, count: 48 },
    { skip: 48, count: 16 },
    { skip: 64, count: 16 },
    { skip: 80, count: 16 },
  ];
  for (const [i, { skip, count }] of rounds.entries()) {
    round = i;
    collectGarbage();
    const dd = await run('dd', [`if=${sourceFile}`, `of=${path.join(dirs.mountpoint, 'f')}`, 'bs=1M', `skip=${skip}`, `seek=${skip}`, `count=${count}`, 'conv=notrunc', 'status=none']);
    t.true(dd.ok, dd.out);
  }
  collectGarbage();
  await new Promise((resolve) => setImmediate(resolve)); // finalizers run from an immediate

  const writes = server.opcodes.filter((op) => op === OP.WRITE).length;
  t.true(writes >= 96, `${writes} WRITE requests`);
  t.true(server.kept.length >= 48 + 24, `${server.kept.length} kept`);
  let large = 0;
  for (const { req, copy } of server.kept) {
    t.true(req.equals(copy), `WRITE ${copy.readBigUInt64LE(8)} changed after its batch`);
    const offset = Number(req.readBigUInt64LE(40 + 8));
    const size = req.readUInt32LE(40 + 16);
    t.is(req.length, WRITE_HEADER + size);
    t.true(req.subarray(WRITE_HEADER).equals(source.subarray(offset, offset + size)), `WRITE at ${offset} holds other bytes`);
    if (size === MAX_WRITE) large++;
  }
  t.true(large >= 48, `${large} requests of 1 MiB`);
  t.deepEqual(server.writeErrors, []);
  await closeMount(dirs.mountpoint, { lazy: false });
  t.is(await within(server.ended, 10_000, 'onEnd after unmount'), ENODEV);
  channel.close();
  channel = undefined;
});

/** Why a user cannot mount FUSE here, or undefined when the test can run. */
async function whyNoUserMounts(): Promise<string | undefined> {
  if (!(await run('sh', ['-c', 'command -v fusermount3'])).ok) {
    return 'fusermount3 is not installed (Debian package fuse3, listed in scripts/test-deps.txt)';
  }
  // fusermount3 opens /dev/fuse with the user's own rights (udev makes it 0666; some containers do not)
  const access = await run('setpriv', [`--reuid=${USER}`, `--regid=${USER}`, '--clear-groups', 'sh', '-c', 'test -r /dev/fuse && test -w /dev/fuse']);
  if (!access.ok) return `uid ${USER} may not open /dev/fuse (${(await fsp.stat('/dev/fuse')).mode.toString(8)}): no user mounts on this machine`;
  return undefined;
}

test.serial('a user (uid 1000) mounts through fusermount3, serves the mount, and unmounts it', async (t) => {
  t.timeout(90_000);
  const why = await whyNoUserMounts();
  if (why) {
    t.log(`${why}: test skipped`);
    t.pass();
    return;
  }
  const children: Array<ReturnType<typeof spawn>> = [];
  const dirs = await dirsFor(t, () => {
    for (const c of children) c.kill('SIGKILL');
  });
  await fsp.chmod(dirs.root, 0o711);
  await fsp.chown(dirs.mountpoint, USER, USER);
  // A comma and a backslash in the name: fusermount3 splits options at commas.
  const fsname = 'darefs,test\\x';
  const child = spawn('setpriv', [`--reuid=${USER}`, `--regid=${USER}`, '--clear-groups', process.execPath, CHILD, dirs.mountpoint, fsname], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', LC_ALL: 'C' },
  });
  children.push(child);
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const lines = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async (what: string): Promise<Record<string, unknown>> => {
    const r = await within(lines.next(), 20_000, what);
    if (r.done) throw new Error(`child ended before ${what}: ${stderr}`);
    return JSON.parse(r.value) as Record<string, unknown>;
  };

  const mounted = await next('mounted');
  t.deepEqual(mounted, { event: 'mounted', how: 'fusermount3' }, stderr);
  const entry = await findMount(dirs.mountpoint);
  t.is(entry?.fsType, 'fuse.darefs');
  t.is(entry?.source, fsname);
  t.regex(entry?.superOptions ?? '', new RegExp(`user_id=${USER},group_id=${USER}`));

  // Without allow_other only the user who mounted may look in.
  const stat = await run('setpriv', [`--reuid=${USER}`, `--regid=${USER}`, '--clear-groups', 'stat', '-c', '%F', dirs.mountpoint]);
  t.true(stat.ok, stat.out);
  t.is(stat.out, 'directory');

  child.stdin.write('unmount\n');
  t.deepEqual(await next('ended'), { event: 'ended', errno: ENODEV, writeErrors: [] });
  t.is(await within(exited, 10_000, 'child exit'), 0, stderr);
  t.is(await findMount(dirs.mountpoint), undefined);
});

test.serial('no mounts left behind', async (t) => {
  await assertNoFuseMountsLeft();
  t.pass();
});
