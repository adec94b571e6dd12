// The status socket directory (/tmp/darefs-UID without XDG_RUNTIME_DIR) may have been made by
// another user first, or be a symlink they planted (issue 10 item 8). The daemon then mounts
// without a status socket and says so; it creates nothing in, and changes nothing about, their
// directory; and `darefs status` does not believe a socket found there.
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { CLI, passfile, writeNcryptFile, writePassfile } from './helpers/darefs';
import { assertNoFuseMountsLeft, cleanupLeftovers, MountDirs, withMount } from './helpers/mount';

test.after.always(() => cleanupLeftovers());

const NOBODY = 65534;
const uid = process.geteuid?.() ?? 0;

function envFor(dirs: MountDirs): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: path.join(dirs.root, 'tmp') };
  delete env.XDG_RUNTIME_DIR;
  return env;
}

const statusDirOf = (dirs: MountDirs): string => path.join(dirs.root, 'tmp', `darefs-${uid}`);
const socketName = (mountpoint: string): string => `${createHash('sha256').update(mountpoint).digest('hex').slice(0, 20)}.sock`;

function statusJson(dirs: MountDirs): Promise<Array<Record<string, unknown>>> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [CLI, 'status', '--json', dirs.mountpoint], { env: envFor(dirs), timeout: 20_000 }, (err, stdout) => {
      if (err) reject(err);
      else resolve(JSON.parse(String(stdout)) as Array<Record<string, unknown>>);
    });
  });
}

function mountWith(prepare: (dirs: MountDirs) => Promise<void>, check: (t: ExecutionContext, dirs: MountDirs, output: string) => Promise<void>) {
  return async (t: ExecutionContext): Promise<void> => {
    t.timeout(60_000);
    await withMount(
      t,
      (dirs) => ({
        command: process.execPath,
        args: [CLI, 'mount', '-f', '--ncrypt', '--passfile', passfile(dirs), dirs.cipherDir, dirs.mountpoint],
        env: envFor(dirs),
      }),
      async (m) => {
        t.is(await fsp.readFile(path.join(m.mountpoint, 'a.txt'), 'utf8'), 'still mounts\n');
        await check(t, m, m.output());
      },
      {
        setup: async (dirs) => {
          await writePassfile(dirs);
          await writeNcryptFile(path.join(dirs.cipherDir, 'a.txt'), Buffer.from('still mounts\n'));
          await fsp.mkdir(path.join(dirs.root, 'tmp'), { mode: 0o1777 });
          await fsp.chmod(path.join(dirs.root, 'tmp'), 0o1777);
          await prepare(dirs);
        },
      },
    );
  };
}

test.serial(
  'a status directory made by another user: nothing created in it, the mount goes on without a socket, status ignores their socket',
  mountWith(
    async (dirs) => {
      await fsp.mkdir(statusDirOf(dirs));
      await fsp.chmod(statusDirOf(dirs), 0o777);
      await fsp.chown(statusDirOf(dirs), NOBODY, NOBODY);
    },
    async (t, dirs, output) => {
      t.deepEqual(await fsp.readdir(statusDirOf(dirs)), [], "nothing created in another user's directory");
      const st = await fsp.lstat(statusDirOf(dirs));
      t.is(st.mode & 0o777, 0o777, 'mode untouched');
      t.is(st.uid, NOBODY, 'owner untouched');
      t.regex(output, /no status socket .*status socket directory \S+ is owned by uid 65534, not by this user/);
      // The owner of that directory serves a fake status on the socket name: status must not show it.
      const fake = net.createServer((s) => s.end(JSON.stringify({ mountpoint: dirs.mountpoint, pid: 4242 }) + '\n'));
      await new Promise<void>((resolve) => fake.listen(path.join(statusDirOf(dirs), socketName(dirs.mountpoint)), resolve));
      try {
        const [row] = await statusJson(dirs);
        t.not(row.pid, 4242, "darefs status believed a socket in another user's directory");
        t.is(row.error, 'no answer from the daemon');
      } finally {
        fake.close();
      }
    },
  ),
);

test.serial(
  'a status directory that is a symlink to another user\'s directory: not followed, nothing created or chmodded there',
  mountWith(
    async (dirs) => {
      const theirs = path.join(dirs.root, 'theirs');
      await fsp.mkdir(theirs);
      await fsp.chmod(theirs, 0o755);
      await fsp.chown(theirs, NOBODY, NOBODY);
      await fsp.symlink(theirs, statusDirOf(dirs));
    },
    async (t, dirs, output) => {
      const theirs = path.join(dirs.root, 'theirs');
      t.deepEqual(await fsp.readdir(theirs), [], 'nothing created through the symlink');
      t.is((await fsp.stat(theirs)).mode & 0o777, 0o755, "the symlink's target is not chmodded");
      t.regex(output, /status socket directory \S+ is a symbolic link/);
    },
  ),
);

test.serial(
  'our own status directory open to group or others is refused too',
  mountWith(
    async (dirs) => {
      await fsp.mkdir(statusDirOf(dirs));
      await fsp.chmod(statusDirOf(dirs), 0o755);
    },
    async (t, dirs, output) => {
      t.deepEqual(await fsp.readdir(statusDirOf(dirs)), []);
      t.regex(output, /status socket directory \S+ has mode 0755: group or others have access/);
    },
  ),
);

test.serial(
  'no status directory yet: the daemon makes it 0700 and serves its status there',
  mountWith(
    async () => undefined,
    async (t, dirs) => {
      const st = await fsp.lstat(statusDirOf(dirs));
      t.true(st.isDirectory());
      t.is(st.mode & 0o777, 0o700);
      t.is(st.uid, uid);
      const [row] = await statusJson(dirs);
      t.is(row.mountpoint, dirs.mountpoint);
      t.is(typeof row.pid, 'number');
    },
  ),
);

test.serial('no mount left behind', async (t) => {
  await assertNoFuseMountsLeft();
  t.pass();
});
