import test from 'ava';
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { CLI, daemonPids, darefsMount, writeNcryptFile, writePassfile } from './helpers/darefs';
import { assertNoFuseMountsLeft, killAndLazyUnmount, makeTestDirs, MountDirs, sleep, withMount } from './helpers/mount';
import { findMount } from '../src/fuse/mountpoint';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function darefs(args: string[], timeoutMs = 30_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : -1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

async function tempDirs(t: { teardown(fn: () => Promise<void>): void }): Promise<MountDirs> {
  const dirs = await makeTestDirs();
  t.teardown(async () => {
    // A background daemon is not our child: find it by its command line.
    for (const pid of await daemonPids(dirs.mountpoint)) await killAndLazyUnmount(pid, dirs.mountpoint).catch(() => undefined);
    if (await findMount(dirs.mountpoint)) await killAndLazyUnmount(-1, dirs.mountpoint).catch(() => undefined);
    await fsp.rm(dirs.root, { recursive: true, force: true });
  });
  return dirs;
}


test.after.always(async () => {
  await assertNoFuseMountsLeft();
});

test.serial('mount runs as a daemon by default, returns once mounted, and darefs umount ends it', async (t) => {
  t.timeout(60_000);
  const dirs = await tempDirs(t);
  await writePassfile(dirs);
  await writeNcryptFile(path.join(dirs.cipherDir, 'hello.txt'), Buffer.from('hello\n'));
  const log = path.join(dirs.root, 'daemon.log');
  const mounted = await darefs(['mount', '--ncrypt', '--passfile', path.join(dirs.root, 'pass.txt'), '--log', log, dirs.cipherDir, dirs.mountpoint]);
  t.is(mounted.code, 0, mounted.stderr);
  // Returned only once the mount answers: no polling needed.
  t.is(await fsp.readFile(path.join(dirs.mountpoint, 'hello.txt'), 'utf8'), 'hello\n');
  const pids = await daemonPids(dirs.mountpoint);
  t.is(pids.length, 1, 'one background daemon');
  const un = await darefs(['umount', dirs.mountpoint]);
  t.is(un.code, 0, un.stderr);
  t.falsy(await findMount(dirs.mountpoint));
  for (let i = 0; i < 50 && (await daemonPids(dirs.mountpoint)).length > 0; i++) await sleep(100);
  t.deepEqual(await daemonPids(dirs.mountpoint), [], 'the daemon exits after the unmount');
  t.regex(await fsp.readFile(log, 'utf8'), /unmounted .* \(from outside\)/);
});

test.serial('a background mount with the wrong password fails with exit 3 and mounts nothing', async (t) => {
  t.timeout(60_000);
  const dirs = await tempDirs(t);
  await writePassfile(dirs, 'wrong');
  await writeNcryptFile(path.join(dirs.cipherDir, 'a'), Buffer.from('x'));
  const res = await darefs(['mount', '--ncrypt', '--passfile', path.join(dirs.root, 'pass.txt'), '--log', path.join(dirs.root, 'log'), dirs.cipherDir, dirs.mountpoint]);
  t.is(res.code, 3, res.stderr);
  t.regex(res.stderr, /wrong password/);
  t.falsy(await findMount(dirs.mountpoint));
});

test.serial('mount refuses a non-empty mount point, a missing one, and one already mounted', async (t) => {
  t.timeout(60_000);
  await withMount(
    t,
    darefsMount(['--ncrypt']),
    async (m) => {
      const pass = path.join(m.root, 'pass.txt');
      const again = await darefs(['mount', '-f', '--ncrypt', '--passfile', pass, m.cipherDir, m.mountpoint]);
      t.not(again.code, 0);
      t.regex(again.stderr, /already a mount point .*darefs umount/);

      const full = path.join(m.root, 'full');
      await fsp.mkdir(full);
      await fsp.writeFile(path.join(full, 'precious'), 'data');
      const nonEmpty = await darefs(['mount', '-f', '--ncrypt', '--passfile', pass, m.cipherDir, full]);
      t.not(nonEmpty.code, 0);
      t.regex(nonEmpty.stderr, /^darefs: mount: mount point .* is not empty/m);
      t.notRegex(nonEmpty.stderr, /unexpected error/);
      t.is(await fsp.readFile(path.join(full, 'precious'), 'utf8'), 'data');

      const missing = await darefs(['mount', '-f', '--ncrypt', '--passfile', pass, m.cipherDir, path.join(m.root, 'nope')]);
      t.not(missing.code, 0);
      t.regex(missing.stderr, /does not exist/);

      const notVolume = await darefs(['mount', '-f', '--passfile', pass, m.cipherDir, full]);
      t.is(notVolume.code, 7);
      t.regex(notVolume.stderr, /not a darefs volume.*--ncrypt/);
    },
    { setup: writePassfile },
  );
});

test.serial('umount of a busy mount names the process holding it; SIGTERM then still unmounts', async (t) => {
  t.timeout(60_000);
  await withMount(
    t,
    darefsMount(['--ncrypt']),
    async (m) => {
      const holder = spawn('sleep', ['60'], { cwd: m.mountpoint, stdio: 'ignore' });
      t.teardown(() => {
        holder.kill('SIGKILL');
      });
      await sleep(200);
      const res = await darefs(['umount', m.mountpoint]);
      t.not(res.code, 0);
      t.regex(res.stderr, new RegExp(`busy[\\s\\S]*pid ${holder.pid} \\(sleep\\)`));
      t.truthy(await findMount(m.mountpoint), 'still mounted');
      // SIGTERM detaches lazily when busy; the daemon exits once the holder is gone.
      const exited = m.stop();
      await sleep(500);
      t.falsy(await findMount(m.mountpoint), 'detached from the mount table');
      holder.kill('SIGKILL');
      const exit = await exited;
      t.is(exit.code, 0);
    },
    { setup: writePassfile },
  );
});

test.serial('ls -l of a directory of many ncrypt files derives no key', async (t) => {
  t.timeout(90_000);
  const count = 300;
  await withMount(
    t,
    darefsMount(['--ncrypt']),
    async (m) => {
      const listing = await new Promise<string>((resolve, reject) => {
        execFile('ls', ['-l', m.mountpoint], { timeout: 30_000 }, (err, out) => (err ? reject(err) : resolve(String(out))));
      });
      t.is(listing.split('\n').filter((l) => l.startsWith('-')).length, count);
      t.regex(listing, /\s1000\s+[A-Z][a-z]{2}/, 'sizes come from the cipher sizes');
      const exit = await m.stop();
      t.is(exit.code, 0);
      // One derivation: the password check on a sample file at mount time; none for the listing.
      t.regex(m.output(), /keys derived 1,/);
    },
    {
      setup: async (dirs) => {
        await writePassfile(dirs);
        // One real ncrypt file (the mount's password check derives its key), the rest copies of
        // it: each file's key would cost 0.2 s of scrypt if the listing derived any.
        const first = path.join(dirs.cipherDir, 'f0000');
        await writeNcryptFile(first, Buffer.alloc(1000, 7));
        for (let i = 1; i < count; i++) await fsp.copyFile(first, path.join(dirs.cipherDir, `f${String(i).padStart(4, '0')}`));
      },
    },
  );
});

test.serial('darefs status reports the mount, its counters, and serves them on an owner-only socket', async (t) => {
  t.timeout(60_000);
  await withMount(
    t,
    darefsMount(['--ncrypt']),
    async (m) => {
      t.is(await fsp.readFile(path.join(m.mountpoint, 'a.txt'), 'utf8'), 'status me\n');
      const res = await darefs(['status', '--json', m.mountpoint]);
      t.is(res.code, 0, res.stderr);
      const [s] = JSON.parse(res.stdout) as Array<Record<string, unknown>>;
      t.is(s.mountpoint, m.mountpoint);
      t.is(s.cipherDir, m.cipherDir);
      t.is(s.mode, 'ncrypt');
      t.is(s.pid, m.daemon.pid);
      t.true((s.packagesDecrypted as number) >= 1);
      t.is(s.authFailures, 0);
      const { statusSocketPath } = await import('../src/fuse/status');
      t.is((await fsp.stat(statusSocketPath(m.mountpoint))).mode & 0o777, 0o600);
      const text = await darefs(['status']);
      t.is(text.code, 0, text.stderr);
      t.regex(text.stdout, /package cache .* hit rate/);
    },
    {
      setup: async (dirs) => {
        await writePassfile(dirs);
        await writeNcryptFile(path.join(dirs.cipherDir, 'a.txt'), Buffer.from('status me\n'));
      },
    },
  );
});

test.serial('--idle-unmount unmounts an unused volume and the daemon exits', async (t) => {
  t.timeout(60_000);
  await withMount(
    t,
    darefsMount(['--ncrypt', '--idle-unmount', '2s']),
    async (m) => {
      const exit = await Promise.race([m.daemon.exited, sleep(20_000).then(() => undefined)]);
      t.truthy(exit, 'the daemon exited by itself');
      t.is(exit?.code, 0);
      t.falsy(await findMount(m.mountpoint));
      t.regex(m.output(), /idle for 2 s: unmounting/);
    },
    { setup: writePassfile },
  );
});

test.serial('without native/darefs_sys: extended attributes are refused with ENOTSUP (not EPERM), FIFOs still work, sockets get EPERM', async (t) => {
  t.timeout(60_000);
  await withMount(
    t,
    darefsMount(['--ncrypt'], { DAREFS_NO_NATIVE: '1' }),
    async (m) => {
      const file = path.join(m.mountpoint, 'a.txt');
      const script = [
        'import os, stat, sys',
        'd = sys.argv[1]',
        'for f in (lambda: os.setxattr(d + "/a.txt", "user.k", b"v"), lambda: os.getxattr(d + "/a.txt", "user.k"),',
        '          lambda: os.mknod(d + "/fifo", stat.S_IFIFO | 0o600), lambda: os.mknod(d + "/sock", stat.S_IFSOCK | 0o600)):',
        '  try:',
        '    f(); print("ok")',
        '  except OSError as e:',
        '    print(e.errno)',
      ].join('\n');
      const out = await new Promise<string>((resolve, reject) => {
        execFile('python3', ['-c', script, m.mountpoint], { timeout: 20_000 }, (err, stdout) => (err ? reject(err) : resolve(String(stdout))));
      });
      t.deepEqual(out.trim().split('\n'), ['95', '95', 'ok', '1']);
      t.true((await fsp.lstat(path.join(m.mountpoint, 'fifo'))).isFIFO());
      await fsp.appendFile(file, 'more\n');
      t.is(await fsp.readFile(file, 'utf8'), 'x\nmore\n');
      t.regex(m.output(), /native\/darefs_sys not loaded \(DAREFS_NO_NATIVE is set\)/);
    },
    {
      setup: async (dirs) => {
        await writePassfile(dirs);
        await writeNcryptFile(path.join(dirs.cipherDir, 'a.txt'), Buffer.from('x\n'));
      },
    },
  );
});

// libfuse 2 has no rename2: the kernel itself refuses an existing target (EEXIST) and answers
// EINVAL for any other flagged rename; mv -n and friends then fall back to a plain rename.
test.serial('SIGTERM the moment the mount appears (before the daemon says it is mounted) still unmounts cleanly', async (t) => {
  t.timeout(90_000);
  // A supervisor (or a test harness) may stop the daemon as soon as the mount shows up in
  // mountinfo, before the daemon has finished starting: the signal must not kill it with a live
  // mount left behind. Several rounds, as the window is short.
  for (let round = 0; round < 5; round++) {
    const dirs = await tempDirs(t);
    await writePassfile(dirs);
    const child = spawn(process.execPath, [CLI, 'mount', '-f', '--ncrypt', '--passfile', path.join(dirs.root, 'pass.txt'), dirs.cipherDir, dirs.mountpoint], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    const deadline = Date.now() + 20_000;
    while (!(await findMount(dirs.mountpoint)) && Date.now() < deadline && child.exitCode === null) await sleep(1);
    t.truthy(await findMount(dirs.mountpoint), `round ${round}: mounted\n${stderr}`);
    child.kill('SIGTERM');
    const exit = await Promise.race([exited, sleep(20_000).then(() => undefined)]);
    t.deepEqual(exit, { code: 0, signal: null }, `round ${round}: clean exit\n${stderr}`);
    t.falsy(await findMount(dirs.mountpoint), `round ${round}: no mount left`);
  }
});

test.serial('RENAME_NOREPLACE: an existing target is refused with EEXIST and kept; a free name is renamed (fuse-native: EINVAL)', async (t) => {
  t.timeout(60_000);
  await withMount(
    t,
    darefsMount(['--ncrypt']),
    async (m) => {
      const script = [
        'import ctypes, os, sys',
        'libc = ctypes.CDLL(None, use_errno=True)',
        'a, b = (os.fsencode(p) for p in sys.argv[1:3])',
        'r = libc.renameat2(-100, a, -100, b, 1)',
        "print('ok' if r == 0 else ctypes.get_errno())",
      ].join('\n');
      const run = (a: string, b: string): Promise<string> =>
        new Promise((resolve, reject) => {
          execFile('python3', ['-c', script, path.join(m.mountpoint, a), path.join(m.mountpoint, b)], { timeout: 20_000 }, (err, out) =>
            err ? reject(err) : resolve(String(out).trim()),
          );
        });
      await fsp.writeFile(path.join(m.mountpoint, 'a'), 'A');
      await fsp.writeFile(path.join(m.mountpoint, 'b'), 'B');
      t.is(await run('a', 'b'), '17', 'EEXIST');
      t.is(await fsp.readFile(path.join(m.mountpoint, 'b'), 'utf8'), 'B');
      if (process.env.DAREFS_TRANSPORT === 'fuse-native') {
        // libfuse 2 has no rename2: the flag is refused rather than ignored.
        t.is(await run('a', 'c'), '22', 'EINVAL');
        await fsp.rename(path.join(m.mountpoint, 'a'), path.join(m.mountpoint, 'c'));
      } else {
        t.is(await run('a', 'c'), 'ok');
      }
      t.is(await fsp.readFile(path.join(m.mountpoint, 'c'), 'utf8'), 'A');
      t.false(fs.existsSync(path.join(m.mountpoint, 'a')));
    },
    { setup: writePassfile },
  );
});
