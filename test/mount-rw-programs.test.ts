/**
 * Real programs on the read-write mount: git, tar, sqlite3, an editor-style save, and the
 * POSIX surface that programs use (hard links, symlinks, chmod/chown, times, FIFOs, statfs).
 * After each unmount every cipher file must decrypt (valid stream) to what the mount showed.
 */
import test, { ExecutionContext } from 'ava';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { prng } from './helpers/darefs';
import { MountContext, assertNoFuseMountsLeft, cleanupLeftovers } from './helpers/mount';
import {
  checkCipherFiles,
  cipherPathOf,
  contentHashes,
  isFuseHidden,
  listTree,
  outcome,
  randomBytesFrom,
  readToEnd,
  requirePrograms,
  run,
  runOk,
  sha256,
  stopCleanly,
  withMasterMount,
} from './helpers/rw';

test.after.always(async () => {
  await cleanupLeftovers();
  await assertNoFuseMountsLeft();
});

/** Stops the daemon and checks every cipher file against the mount's view just before. */
async function stopAndCheckCipherFiles(t: ExecutionContext, m: MountContext): Promise<void> {
  const hashes = await contentHashes(m.mountpoint);
  await stopCleanly(t, m);
  await checkCipherFiles(t, m.cipherDir, hashes);
}

const GIT_ENV = (home: string): NodeJS.ProcessEnv => ({
  HOME: home,
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_AUTHOR_NAME: 'darefs test',
  GIT_AUTHOR_EMAIL: 'test@darefs.invalid',
  GIT_COMMITTER_NAME: 'darefs test',
  GIT_COMMITTER_EMAIL: 'test@darefs.invalid',
  GIT_AUTHOR_DATE: '2020-01-02T03:04:05Z',
  GIT_COMMITTER_DATE: '2020-01-02T03:04:05Z',
});

test.serial('git: clone onto the mount, fsck --full, log, commit and gc on the mount, fsck after a remount', async (t) => {
  t.timeout(120_000);
  await requirePrograms('git');
  await withMasterMount(t, async (m) => {
    const env = GIT_ENV(m.root);
    const src = path.join(m.root, 'src');
    const repo = path.join(m.mountpoint, 'repo');
    const git = (cwd: string, ...args: string[]) => runOk('git', args, { cwd, env, timeoutMs: 60_000 });
    await fsp.mkdir(src);
    await git(src, 'init', '-q', '-b', 'main');
    const rand = prng(21);
    for (let i = 0; i < 4; i++) {
      await fsp.mkdir(path.join(src, `dir${i % 2}`), { recursive: true });
      await fsp.writeFile(path.join(src, `dir${i % 2}`, `file${i}.bin`), randomBytesFrom(rand, 1000 + i * 70_000));
      await fsp.writeFile(path.join(src, 'README'), `revision ${i}\n`);
      await git(src, 'add', '-A');
      await git(src, 'commit', '-q', '-m', `commit ${i}`);
    }
    await git(m.mountpoint, 'clone', '-q', '--no-hardlinks', src, repo);
    await git(repo, 'fsck', '--full', '--strict');
    const srcLog = (await git(src, 'log', '--format=%H %s')).stdout;
    t.is((await git(repo, 'log', '--format=%H %s')).stdout, srcLog, 'git log on the mount');
    t.is((await git(repo, 'status', '--porcelain')).stdout, '', 'clean work tree');
    // Work on the mount: index and ref updates are lock files renamed into place.
    await fsp.appendFile(path.join(repo, 'README'), 'changed on the mount\n');
    await fsp.writeFile(path.join(repo, 'dir1', 'new.txt'), 'new\n');
    await git(repo, 'add', '-A');
    await git(repo, 'commit', '-q', '-m', 'on the mount');
    await git(repo, 'gc', '-q', '--aggressive', '--prune=now');
    await git(repo, 'fsck', '--full', '--strict');
    t.is((await git(repo, 'rev-list', '--count', 'HEAD')).stdout.trim(), '5');
    await stopCleanly(t, m);
    await m.respawn();
    await git(repo, 'fsck', '--full', '--strict');
    t.is((await git(repo, 'status', '--porcelain')).stdout, '', 'clean after a remount');
    t.is((await git(repo, 'show', 'HEAD:README')).stdout, 'revision 3\nchanged on the mount\n');
    await stopAndCheckCipherFiles(t, m);
  });
});

test.serial('tar: x of a generated tree onto the mount, c from the mount, same names, types, modes, links and contents', async (t) => {
  t.timeout(120_000);
  await requirePrograms('tar');
  await withMasterMount(t, async (m) => {
    const tree = path.join(m.root, 'tree');
    const rand = prng(31);
    const dirs = ['a', 'a/b', 'a/b/c', 'e', 'e/empty', 'a/b/c/d'];
    for (const d of dirs) await fsp.mkdir(path.join(tree, d), { recursive: true });
    const sizes = [0, 1, 100, 4096, 65535, 65536, 65537, 131077, 200_000, 1_048_579, 2_097_159];
    let n = 0;
    for (const size of sizes) {
      const dir = dirs[n % dirs.length];
      await fsp.writeFile(path.join(tree, dir, `f${n++}-${size}.bin`), randomBytesFrom(rand, size));
    }
    for (let i = 0; i < 30; i++) await fsp.writeFile(path.join(tree, 'e', `small${i}.txt`), `small file ${i}\n`.repeat(i));
    await fsp.chmod(path.join(tree, 'a/f0-0.bin'), 0o755);
    await fsp.chmod(path.join(tree, 'a/b/f1-1.bin'), 0o600);
    await fsp.chmod(path.join(tree, 'e/empty'), 0o700);
    await fsp.symlink('a/b/f1-1.bin', path.join(tree, 'link-file'));
    await fsp.symlink('b/c', path.join(tree, 'a', 'link-dir'));
    await fsp.symlink('does/not/exist', path.join(tree, 'dangling'));
    await fsp.symlink('/etc/hostname', path.join(tree, 'e', 'absolute'));
    const tarball = path.join(m.root, 'src.tar');
    // pax format: sub-second mtimes survive the round trip.
    await runOk('tar', ['--format=posix', '-cf', tarball, '-C', tree, '.']);
    t.true((await fsp.stat(tarball)).size > 3 * 1024 * 1024, 'a few MiB');

    const x = path.join(m.mountpoint, 'x');
    await fsp.mkdir(x);
    await runOk('tar', ['-xf', tarball, '-C', x], { timeoutMs: 60_000 });
    const out = path.join(m.root, 'out.tar');
    await runOk('tar', ['--format=posix', '-cf', out, '-C', x, '.'], { timeoutMs: 60_000 });
    const back = path.join(m.root, 'back');
    await fsp.mkdir(back);
    await runOk('tar', ['-xf', out, '-C', back]);

    const want = await listTree(tree);
    for (const [label, root] of [['mount', x], ['tar c from the mount', back]] as const) {
      const got = await listTree(root);
      t.deepEqual([...got.keys()], [...want.keys()], `${label}: names`);
      for (const [rel, w] of want) {
        const g = got.get(rel);
        if (!g) continue;
        t.deepEqual(g, w, `${label}: ${rel} type, size, mode, link target`);
        if (w.type === 'file') {
          const same = sha256(await readToEnd(path.join(root, rel))) === sha256(fs.readFileSync(path.join(tree, rel)));
          if (!same) t.fail(`${label}: ${rel} content differs`);
        }
      }
    }
    // tar x sets each file's mtime on its open descriptor before closing it: the unsealed data
    // sealed at close must not replace that mtime.
    for (const [rel] of want) {
      const a = Math.floor(fs.lstatSync(path.join(tree, rel)).mtimeMs);
      const b = Math.floor((await fsp.lstat(path.join(x, rel))).mtimeMs);
      if (a !== b) t.fail(`mount: ${rel} mtime ${new Date(b).toISOString()}, archive ${new Date(a).toISOString()}`);
    }
    // tar's own listing of both archives (names, modes, sizes, link targets; not times).
    const list = async (f: string): Promise<string> =>
      (await runOk('tar', ['-tvf', f, '--numeric-owner'])).stdout
        .split('\n')
        .filter(Boolean)
        .map((l) => l.replace(/^(\S+)\s+\S+\s+(\d+)\s+\S+\s+\S+\s+(.*)$/, '$1 $2 $3'))
        .sort()
        .join('\n');
    t.is(await list(out), await list(tarball), 'tar -tv listings match (owner and times aside)');
    await stopAndCheckCipherFiles(t, m);
  });
});

test.serial('sqlite3: a few hundred transactions, integrity_check ok and the same rows as on a plain directory, also after a remount', async (t) => {
  t.timeout(120_000);
  await requirePrograms('sqlite3');
  await withMasterMount(t, async (m) => {
    const TX = 250;
    const lines = ['CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v TEXT);', 'CREATE INDEX t_k ON t(k);'];
    for (let i = 1; i <= TX; i++) {
      lines.push(
        'BEGIN;',
        `INSERT INTO t(k, v) VALUES (${i % 17}, printf('%d:', ${i}) || replace(hex(zeroblob(${(i * 37) % 700})), '00', 'ab'));`,
        `INSERT INTO t(k, v) VALUES (${(i * 7) % 23}, 'row ${i}');`,
        `UPDATE t SET v = v || '+' WHERE k = ${i % 11};`,
        `DELETE FROM t WHERE id = ${Math.floor(i / 3)};`,
        'COMMIT;',
      );
    }
    const script = lines.join('\n');
    const dump = 'SELECT id, k, length(v), v FROM t ORDER BY id;';
    const plainDb = path.join(m.root, 'plain.db');
    const db = path.join(m.mountpoint, 'test.db');
    await runOk('sqlite3', [plainDb], { input: script });
    const want = (await runOk('sqlite3', [plainDb, dump])).stdout;
    const started = Date.now();
    await runOk('sqlite3', [db], { input: script, timeoutMs: 90_000 });
    t.log(`${TX} transactions on the mount in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    t.is((await runOk('sqlite3', [db, 'PRAGMA integrity_check;'])).stdout.trim(), 'ok');
    t.is((await runOk('sqlite3', [db, dump])).stdout, want, 'same rows as on a plain directory');
    // WAL mode: the -shm file is mmap()ed shared and writable.
    const wal = path.join(m.mountpoint, 'wal.db');
    await runOk('sqlite3', [wal], {
      input: `PRAGMA journal_mode=WAL;\nCREATE TABLE w(x);\n${Array.from({ length: 50 }, (_, i) => `INSERT INTO w VALUES (${i});`).join('\n')}\nPRAGMA wal_checkpoint(TRUNCATE);\n`,
    });
    t.is((await runOk('sqlite3', [wal, 'PRAGMA integrity_check; SELECT sum(x) FROM w;'])).stdout.trim(), 'ok\n1225');
    t.deepEqual((await fsp.readdir(m.mountpoint)).filter((n) => n.endsWith('-journal')), [], 'no journal left');
    await stopCleanly(t, m);
    await m.respawn();
    t.is((await runOk('sqlite3', [db, 'PRAGMA integrity_check;'])).stdout.trim(), 'ok', 'after a remount');
    t.is((await runOk('sqlite3', [db, dump])).stdout, want, 'same rows after a remount');
    t.is((await runOk('sqlite3', [wal, 'SELECT sum(x) FROM w;'])).stdout.trim(), '1225');
    await stopAndCheckCipherFiles(t, m);
  });
});

test.serial('editor-style save: temp file, fsync, rename over the original; readers of the old file keep it; nothing left behind', async (t) => {
  t.timeout(60_000);
  await withMasterMount(t, async (m) => {
    const mnt = (n: string): string => path.join(m.mountpoint, n);
    const rand = prng(41);
    const v1 = randomBytesFrom(rand, 150_000);
    await fsp.mkdir(mnt('docs'));
    await fsp.writeFile(mnt('docs/note.txt'), v1);
    await fsp.chmod(mnt('docs/note.txt'), 0o640);
    const reader = await fsp.open(mnt('docs/note.txt'), 'r');
    try {
      for (let round = 0; round < 3; round++) {
        const next = randomBytesFrom(rand, 1000 + round * 90_000);
        const tmp = mnt(`docs/.note.txt.swp${round}`);
        const fh = await fsp.open(tmp, 'wx', 0o640);
        await fh.write(next);
        await fh.sync();
        await fh.close();
        await fsp.rename(tmp, mnt('docs/note.txt'));
        t.true((await readToEnd(mnt('docs/note.txt'))).equals(next), `round ${round}: the new content under the name`);
        t.is((await fsp.stat(mnt('docs/note.txt'))).mode & 0o777, 0o640);
      }
      const old = Buffer.alloc(v1.length + 10);
      const { bytesRead } = await reader.read(old, 0, old.length, 0);
      t.true(old.subarray(0, bytesRead).equals(v1), 'a reader that had the original open still reads it');
    } finally {
      await reader.close();
    }
    // close() returns before the kernel's release reaches the daemon, and libfuse removes the
    // unlinked-while-open file (.fuse_hidden*) only at that release: give it a moment.
    const others = async (): Promise<string[]> => (await fsp.readdir(mnt('docs'))).filter((n) => n !== 'note.txt');
    for (let i = 0; i < 100 && (await others()).length > 0; i++) await new Promise((r) => setTimeout(r, 20));
    t.deepEqual(await others(), [], 'no temporary file left on the mount');
    t.deepEqual(fs.readdirSync(await cipherPathOf(m.cipherDir, 'docs')), [path.basename(await cipherPathOf(m.cipherDir, 'docs/note.txt'))], 'nor in the cipher directory');
    await stopAndCheckCipherFiles(t, m);
  });
});

test.serial('hard links (ln), symlinks (ln -s, readlink), chmod, chown, a FIFO by mknod, statfs (df)', async (t) => {
  t.timeout(60_000);
  await requirePrograms('ln', 'readlink', 'chown', 'mkfifo', 'df', 'sh', 'cat');
  await withMasterMount(t, async (m) => {
    const mnt = (n: string): string => path.join(m.mountpoint, n);
    const rand = prng(51);

    // hard links
    const data = randomBytesFrom(rand, 100_000);
    await fsp.writeFile(mnt('a'), data);
    await runOk('ln', [mnt('a'), mnt('b')]);
    t.is((await fsp.stat(mnt('b'))).nlink, 2);
    const extra = randomBytesFrom(rand, 70_000);
    await fsp.appendFile(mnt('b'), extra);
    t.true((await readToEnd(mnt('a'))).equals(Buffer.concat([data, extra])), 'written through b, read through a');
    const patch = Buffer.from('patched through a');
    const fa = await fsp.open(mnt('a'), 'r+');
    await fa.write(patch, 0, patch.length, 5000);
    await fa.close();
    const both = Buffer.concat([data, extra]);
    patch.copy(both, 5000);
    t.true((await readToEnd(mnt('b'))).equals(both), 'written through a, read through b');
    await fsp.unlink(mnt('a'));
    t.true((await readToEnd(mnt('b'))).equals(both), 'b survives unlinking a');
    t.is((await fsp.stat(mnt('b'))).nlink, 1);

    // symlinks
    await fsp.mkdir(mnt('dir'));
    await fsp.writeFile(mnt('dir/target'), 'target content');
    await runOk('ln', ['-s', 'dir/target', mnt('rel')]);
    await runOk('ln', ['-s', 'nowhere/at/all', mnt('dangling')]);
    await runOk('ln', ['-s', 'dir', mnt('dirlink')]);
    t.is((await runOk('readlink', [mnt('rel')])).stdout.trim(), 'dir/target');
    t.is(await fsp.readlink(mnt('dangling')), 'nowhere/at/all');
    t.true((await fsp.lstat(mnt('rel'))).isSymbolicLink());
    t.is(await fsp.readFile(mnt('rel'), 'utf8'), 'target content', 'reading through a symlink');
    t.deepEqual(await fsp.readdir(mnt('dirlink')), ['target'], 'a symlink to a directory');
    t.is(await outcome(fsp.readFile(mnt('dangling'))), 'ENOENT');
    await fsp.rename(mnt('rel'), mnt('dir/rel2'));
    t.is(await fsp.readlink(mnt('dir/rel2')), 'dir/target', 'a renamed symlink keeps its target');
    const stored = fs.readlinkSync(await cipherPathOf(m.cipherDir, 'dir/rel2'));
    t.true(stored.startsWith('dare1:') && !stored.includes('dir/target'), 'symlinks are symlinks in the cipher directory, their targets sealed (FORMAT.md §7)');

    // chmod / chown
    await fsp.chmod(mnt('b'), 0o604);
    t.is((await fsp.stat(mnt('b'))).mode & 0o7777, 0o604);
    await fsp.chmod(mnt('dir'), 0o2750);
    t.is((await fsp.stat(mnt('dir'))).mode & 0o7777, 0o2750);
    await runOk('chown', ['1234:5678', mnt('b')]);
    const sb = await fsp.stat(mnt('b'));
    t.deepEqual([sb.uid, sb.gid], [1234, 5678]);
    const cb = fs.statSync(await cipherPathOf(m.cipherDir, 'b'));
    t.deepEqual([cb.uid, cb.gid, cb.mode & 0o7777], [1234, 5678, 0o604], 'owner and mode live on the cipher inode');
    await runOk('chown', ['-h', '42:43', mnt('dangling')]);
    const sl = await fsp.lstat(mnt('dangling'));
    t.deepEqual([sl.uid, sl.gid], [42, 43], 'chown -h changes the symlink itself');
    t.true((await readToEnd(mnt('b'))).equals(both), 'content unchanged by chmod/chown');

    // FIFO through mknod
    await runOk('mkfifo', ['-m', '0620', mnt('fifo')]);
    const st = await fsp.lstat(mnt('fifo'));
    t.true(st.isFIFO(), 'mkfifo makes a FIFO');
    t.is(st.mode & 0o777, 0o620);
    const readerP = run('cat', [mnt('fifo')], { timeoutMs: 15_000 });
    await runOk('sh', ['-c', 'echo through the fifo > "$1"', 'sh', mnt('fifo')], { timeoutMs: 15_000 });
    t.is((await readerP).stdout, 'through the fifo\n');

    // statfs
    const df = await runOk('df', ['-P', '-B1', m.mountpoint]);
    const cols = df.stdout.trim().split('\n')[1].split(/\s+/);
    const total = Number(cols[1]);
    const under = await fsp.statfs(m.cipherDir);
    const underTotal = under.blocks * under.bsize;
    t.true(total > 0 && Math.abs(total - underTotal) / underTotal < 0.01, `df total ${total} ≈ cipher file system ${underTotal}`);
    const sf = await fsp.statfs(m.mountpoint);
    t.true(sf.bavail > 0 && sf.bsize > 0 && sf.files > 0, 'statfs fields');

    t.deepEqual((await fsp.readdir(m.mountpoint)).filter(isFuseHidden), [], 'no hidden leftovers');
    await stopAndCheckCipherFiles(t, m);
  });
});

test.serial('times as on ext4: touch -d, utimes with distinct atime and mtime, touch -m/-a, touch (now), touch -h, cp -p', async (t) => {
  t.timeout(60_000);
  await requirePrograms('touch', 'cp');
  await withMasterMount(t, async (m) => {
    // Every step runs on a file in the mount and on one in a plain directory; the times must
    // agree to the millisecond (what FUSE attributes carry here).
    const plain = path.join(m.root, 'plain');
    await fsp.mkdir(plain);
    const on = (n: string): [string, string] => [path.join(m.mountpoint, n), path.join(plain, n)];
    const times = async (p: string): Promise<string> => {
      const s = await fsp.lstat(p);
      return `atime ${new Date(Math.floor(s.atimeMs)).toISOString()} mtime ${new Date(Math.floor(s.mtimeMs)).toISOString()}`;
    };
    // Also on the cipher inode itself: the kernel may answer stat from attributes it cached from
    // the setattr reply, and miss a later change underneath (a flush at close).
    const same = async (n: string, what: string): Promise<void> => {
      const [a, b] = on(n);
      const want = await times(b);
      t.is(await times(a), want, what);
      t.is(await times(await cipherPathOf(m.cipherDir, n)), want, `${what} (cipher inode)`);
    };
    for (const p of [...on('f'), ...on('g')]) await fsp.writeFile(p, 'x'.repeat(100_000));
    for (const p of on('l')) await fsp.symlink('f', p);

    for (const p of on('f')) await runOk('touch', ['-d', '2001-02-03T04:05:06.789123456Z', p]);
    await same('f', 'touch -d');
    for (const p of on('f')) await fsp.utimes(p, new Date('2002-01-01T00:00:00.123Z'), new Date('2003-01-01T00:00:00.456Z'));
    await same('f', 'utimes with distinct atime and mtime');
    t.regex(await times(on('f')[0]), /mtime 2003-01-01T00:00:00\.45\dZ/);
    // touch opens the file before it sets the times, and the daemon's open reads the cipher
    // file's header, which updates the cipher atime under relatime (atime <= mtime or ctime, or
    // older than a day) where ext4 would not (no read): a known difference in atimes, not what
    // this test is about. An atime in the future keeps relatime out, so that only the
    // UTIME_OMIT handling of touch -m decides the atime.
    const future = new Date(Date.now() + 3600_000).toISOString();
    for (const p of on('f')) await runOk('touch', ['-a', '-d', future, p]);
    await same('f', 'touch -a');
    for (const p of on('f')) await runOk('touch', ['-m', '-d', '2005-05-05T05:05:05Z', p]);
    await same('f', 'touch -m leaves the atime');
    for (const p of on('f')) await runOk('touch', ['-a', '-d', '2006-06-06T06:06:06Z', p]);
    await same('f', 'touch -a leaves the mtime');
    const fBefore = await times(on('f')[0]);
    for (const p of on('l')) await runOk('touch', ['-h', '-d', '2004-04-04T04:04:04Z', p]);
    await same('l', 'touch -h sets the symlink times');
    t.is(await times(on('f')[0]), fBefore, 'and not its target');

    // Writes, then times set on the open descriptor, then close (what cp -p and tar x do).
    const src = path.join(plain, 'src');
    await fsp.writeFile(src, randomBytesFrom(prng(61), 300_000));
    await fsp.utimes(src, new Date('2010-10-10T10:10:10.100Z'), new Date('2011-11-11T11:11:11.111Z'));
    const srcTimes = await times(src);
    await runOk('cp', ['-p', src, path.join(m.mountpoint, 'copy')]);
    t.is(await times(path.join(m.mountpoint, 'copy')), srcTimes, 'cp -p keeps the times');
    t.is(await times(await cipherPathOf(m.cipherDir, 'copy')), srcTimes, 'cp -p keeps the times (cipher inode)');
    for (const p of on('g')) {
      const fh = await fsp.open(p, 'r+');
      await fh.write(Buffer.alloc(5000, 9), 0, 5000, 70_000);
      await fh.utimes(new Date('2012-12-12T12:12:12.120Z'), new Date('2013-03-03T03:03:03.030Z'));
      await fh.close();
    }
    await same('g', 'futimens after writes, then close');

    const before = Date.now();
    await runOk('touch', [on('g')[0]]);
    const g = await fsp.lstat(on('g')[0]);
    t.true(Math.abs(g.mtimeMs - before) < 5000 && Math.abs(g.atimeMs - before) < 5000, `touch sets now: ${g.mtime.toISOString()}`);
  });
});

test.serial('hard links: writes through two open names keep one consistent, valid file', async (t) => {
  t.timeout(60_000);
  await withMasterMount(t, async (m) => {
    const mnt = (n: string): string => path.join(m.mountpoint, n);
    const want = Buffer.alloc(270_000, 1);
    await fsp.writeFile(mnt('a'), want.subarray(0, 200_000));
    await fsp.link(mnt('a'), mnt('b'));
    const fa = await fsp.open(mnt('a'), 'r+');
    const fb = await fsp.open(mnt('b'), 'r+');
    try {
      await fa.read(Buffer.alloc(100), 0, 100, 199_950);
      // b grows the file past a's old last package; then a writes into that package.
      await fb.write(Buffer.alloc(70_000, 2), 0, 70_000, 200_000);
      want.fill(2, 200_000);
      await fb.sync();
      await fa.write(Buffer.alloc(10, 3), 0, 10, 199_990);
      want.fill(3, 199_990, 200_000);
      await fa.write(Buffer.alloc(10, 4), 0, 10, 5);
      want.fill(4, 5, 15);
      await fb.write(Buffer.alloc(10, 5), 0, 10, 100);
      want.fill(5, 100, 110);
    } finally {
      await fa.close();
      await fb.close();
    }
    t.true((await readToEnd(mnt('a'))).equals(want), 'through a');
    t.true((await readToEnd(mnt('b'))).equals(want), 'through b');
    await stopAndCheckCipherFiles(t, m);
  });
});

// Known limitation of libfuse 2's high-level API, not fixed here: every NAME gets its own kernel
// inode (and, without the use_ino mount option, its own st_ino), so two names of one file have
// separate attribute and page caches in the kernel: a still-open name keeps its old size (for up
// to attr_timeout) and cached pages after a write through the other name. The daemon side is one
// object per file (tested above).
test.serial('hard links share one st_ino (the cipher inode)', async (t) => {
  t.timeout(60_000);
  await withMasterMount(t, async (m) => {
    const mnt = (n: string): string => path.join(m.mountpoint, n);
    await fsp.writeFile(mnt('a'), Buffer.alloc(1000, 1));
    await fsp.link(mnt('a'), mnt('b'));
    t.is((await fsp.stat(mnt('a'))).ino, (await fsp.stat(mnt('b'))).ino);
    t.is((await fsp.stat(mnt('a'))).ino, (await fsp.stat(await cipherPathOf(m.cipherDir, 'a'))).ino);
  });
});

test.serial('a write through one open hard-linked name shows at once through the other', async (t) => {
  t.timeout(60_000);
  await withMasterMount(t, async (m) => {
    const mnt = (n: string): string => path.join(m.mountpoint, n);
    await fsp.writeFile(mnt('a'), Buffer.alloc(200_000, 1));
    await fsp.link(mnt('a'), mnt('b'));
    const fa = await fsp.open(mnt('a'), 'r+');
    const fb = await fsp.open(mnt('b'), 'r+');
    try {
      await fb.write(Buffer.alloc(1000, 3), 0, 1000, 250_000);
      const viaA = Buffer.alloc(1000);
      const { bytesRead } = await fa.read(viaA, 0, 1000, 250_000);
      t.is(bytesRead, 1000, 'the new end is visible through a');
      t.true(viaA.equals(Buffer.alloc(1000, 3)), 'the new bytes are visible through a');
    } finally {
      await fa.close();
      await fb.close();
    }
  });
});
