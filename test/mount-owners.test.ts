/**
 * Who owns what another user creates through an `--allow-other` mount (the daemon runs as root),
 * and with which mode: as on a local file system, compared with a plain directory on the cipher
 * directory's own file system. The patched fuse-native passes the caller's uid and gid with
 * create, mkdir, mknod and symlink; the caller's umask is applied by the kernel, never the
 * daemon's on top of it; a setgid directory gives its group.
 */
import test from 'ava';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { assertNoFuseMountsLeft, cleanupLeftovers } from './helpers/mount';
import { requirePrograms, runOk, withMasterMount } from './helpers/rw';

test.after.always(async () => {
  await cleanupLeftovers();
  await assertNoFuseMountsLeft();
});

const USER = 1000;
const GROUP = 1000;
const DIR_GROUP = 50;

/** What the unprivileged user does, with umask 002, then what `stat` says of each result. */
const AS_USER = String.raw`
set -e
umask 002
cd "$1"
printf data > file
mkdir dir
ln -s file link
mkfifo fifo
printf x > sgid/file
mkdir sgid/dir
(umask 077; printf secret > private)
stat -c '%n %u:%g %a %F' file dir link fifo sgid/file sgid/dir private
`;

async function prepare(root: string): Promise<string> {
  const work = path.join(root, 'work');
  await fsp.mkdir(work);
  await fsp.chmod(work, 0o777);
  await fsp.mkdir(path.join(work, 'sgid'));
  await fsp.chown(path.join(work, 'sgid'), 0, DIR_GROUP);
  await fsp.chmod(path.join(work, 'sgid'), 0o2777);
  return work;
}

async function asUser(dir: string): Promise<string[]> {
  const res = await runOk('setpriv', [`--reuid=${USER}`, `--regid=${GROUP}`, '--clear-groups', '--', 'sh', '-c', AS_USER, 'sh', dir], { timeoutMs: 20_000 });
  return res.stdout.trim().split('\n');
}

test.serial('what another user creates through an allow_other mount is theirs, with the mode their umask gives, as on a plain directory', async (t) => {
  t.timeout(90_000);
  await requirePrograms('setpriv', 'sh', 'stat', 'mkfifo', 'ln');
  await withMasterMount(
    t,
    async (m) => {
      // The user must be able to reach both places.
      await fsp.chmod(m.root, 0o755);
      await fsp.chmod(m.mountpoint, 0o755);
      const plain = path.join(m.root, 'plain');
      await fsp.mkdir(plain, { mode: 0o755 });
      await fsp.chmod(plain, 0o755);

      const expected = await asUser(await prepare(plain));
      const got = await asUser(await prepare(m.mountpoint));
      t.deepEqual(got, expected);
      // What the comparison stands on: ownership really moved to the user, the umask was the user's.
      t.deepEqual(expected, [
        `file ${USER}:${GROUP} 664 regular file`,
        `dir ${USER}:${GROUP} 775 directory`,
        `link ${USER}:${GROUP} 777 symbolic link`,
        `fifo ${USER}:${GROUP} 664 fifo`,
        `sgid/file ${USER}:${DIR_GROUP} 664 regular file`,
        `sgid/dir ${USER}:${DIR_GROUP} 2775 directory`,
        `private ${USER}:${GROUP} 600 regular file`,
      ]);

      // The cipher files carry it (the mount shows their owners).
      const st = await fsp.lstat(path.join(m.cipherDir, 'work', 'file'));
      t.deepEqual([st.uid, st.gid, st.mode & 0o7777], [USER, GROUP, 0o664]);
      const link = await fsp.lstat(path.join(m.cipherDir, 'work', 'link'));
      t.deepEqual([link.uid, link.gid], [USER, GROUP]);
      // And the user can go on using it, as its owner, under default_permissions.
      await runOk('setpriv', [`--reuid=${USER}`, `--regid=${GROUP}`, '--clear-groups', '--', 'sh', '-c', 'printf more >> "$1/file" && chmod 600 "$1/file" && cat "$1/file"', 'sh', path.join(m.mountpoint, 'work')]);
      t.is(await fsp.readFile(path.join(m.mountpoint, 'work', 'file'), 'utf8'), 'datamore');
    },
    { extra: () => ['--allow-other'] },
  );
});
