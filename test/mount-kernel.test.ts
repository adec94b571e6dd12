/**
 * What the own transport (--transport kernel) adds over fuse-native, through a real mount:
 * one kernel inode per cipher inode (hard links see each other's changes at once), rename2's
 * flags, fallocate, SEEK_DATA/SEEK_HOLE, and the mount's INIT choices.
 */
import test from 'ava';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { loadSysCalls } from '../src/sys';
import { assertNoFuseMountsLeft, cleanupLeftovers, MountContext } from './helpers/mount';
import { decryptCipherFile, requirePrograms, runOk, volumeKeys, withMasterMount } from './helpers/rw';

test.after.always(async () => {
  await cleanupLeftovers();
  await assertNoFuseMountsLeft();
});

const kernel = { extra: () => ['--transport', 'kernel'] };
const RENAME_NOREPLACE = 1;
const RENAME_EXCHANGE = 2;

/** stat from another process, so nothing is answered from this test's own caches. */
async function statOf(file: string): Promise<{ nlink: number; mode: string; uid: number; ctime: string; ino: string }> {
  const out = (await runOk('stat', ['-c', '%h %a %u %Z.%z %i', file])).stdout.trim().split(' ');
  return { nlink: Number(out[0]), mode: out[1], uid: Number(out[2]), ctime: out.slice(3, -1).join(' '), ino: out[out.length - 1] };
}

test.serial('hard links: link, chmod, chown and unlink through one name show at once through the others', async (t) => {
  t.timeout(60_000);
  await requirePrograms('stat', 'ln', 'chmod', 'chown');
  await withMasterMount(
    t,
    async (m: MountContext) => {
      const a = path.join(m.mountpoint, 'a');
      const b = path.join(m.mountpoint, 'sub', 'b');
      const c = path.join(m.mountpoint, 'c');
      await fsp.mkdir(path.join(m.mountpoint, 'sub'));
      await fsp.writeFile(a, 'linked content');
      // Cache a's attributes in the kernel first: the check is that they do not stay stale.
      t.is((await statOf(a)).nlink, 1);
      await runOk('ln', [a, b]);
      t.is((await statOf(a)).nlink, 2, 'nlink through the first name right after ln');
      t.is((await statOf(b)).ino, (await statOf(a)).ino, 'one inode number');
      const before = await statOf(a);
      await new Promise((r) => setTimeout(r, 20));
      await runOk('chmod', ['640', b]);
      t.is((await statOf(a)).mode, '640', 'mode through the other name right after chmod');
      t.not((await statOf(a)).ctime, before.ctime, 'ctime through the other name changed');
      await runOk('chown', ['65534', a]);
      t.is((await statOf(b)).uid, 65534, 'owner through the other name right after chown');
      await runOk('ln', [b, c]);
      t.is((await statOf(a)).nlink, 3);
      await fsp.unlink(c);
      t.is((await statOf(a)).nlink, 2, 'nlink through another name right after unlink');
      await fsp.unlink(a);
      t.is((await statOf(b)).nlink, 1);
      t.is(await fsp.readFile(b, 'utf8'), 'linked content');
    },
    kernel,
  );
});

test.serial('rename2: RENAME_NOREPLACE refuses an existing target; RENAME_EXCHANGE swaps files and directories (open files follow)', async (t) => {
  t.timeout(60_000);
  const sys = loadSysCalls().calls;
  if (!sys) return t.fail('native/darefs_sys is needed for renameat2');
  await withMasterMount(
    t,
    async (m) => {
      const p = (n: string): string => path.join(m.mountpoint, n);
      await fsp.writeFile(p('one'), 'ONE');
      await fsp.writeFile(p('two'), 'TWO');
      const err = t.throws(() => sys.renameat2(p('one'), p('two'), RENAME_NOREPLACE));
      t.is((err as NodeJS.ErrnoException).code, 'EEXIST');
      t.is(await fsp.readFile(p('two'), 'utf8'), 'TWO', 'target untouched');
      sys.renameat2(p('one'), p('three'), RENAME_NOREPLACE);
      t.false(fs.existsSync(p('one')));
      t.is(await fsp.readFile(p('three'), 'utf8'), 'ONE');

      const open = await fsp.open(p('three'), 'r+');
      try {
        sys.renameat2(p('three'), p('two'), RENAME_EXCHANGE);
        t.is(await fsp.readFile(p('two'), 'utf8'), 'ONE');
        t.is(await fsp.readFile(p('three'), 'utf8'), 'TWO');
        // The open file (was "three", now "two") keeps writing to its own content.
        await open.write('ONE!', 0);
        await open.sync();
      } finally {
        await open.close();
      }
      t.is(await fsp.readFile(p('two'), 'utf8'), 'ONE!');
      t.is(await fsp.readFile(p('three'), 'utf8'), 'TWO');

      await fsp.mkdir(p('d1'));
      await fsp.writeFile(p('d1/in1'), 'in d1');
      await fsp.mkdir(p('d2'));
      sys.renameat2(p('d1'), p('d2'), RENAME_EXCHANGE);
      t.deepEqual(await fsp.readdir(p('d2')), ['in1']);
      t.deepEqual(await fsp.readdir(p('d1')), []);
      t.is(await fsp.readFile(p('d2/in1'), 'utf8'), 'in d1');

      // The cipher directory holds the same layout, and the content decrypts.
      const keyFor = await volumeKeys(m.cipherDir);
      t.is((await decryptCipherFile(keyFor, path.join(m.cipherDir, 'two'))).toString(), 'ONE!');
      t.is((await decryptCipherFile(keyFor, path.join(m.cipherDir, 'd2', 'in1'))).toString(), 'in d1');
    },
    kernel,
  );
});

test.serial('fallocate: mode 0 extends with zeros that read back and decrypt; KEEP_SIZE keeps the size; punching holes is refused', async (t) => {
  t.timeout(60_000);
  await requirePrograms('fallocate');
  await withMasterMount(
    t,
    async (m) => {
      const f = path.join(m.mountpoint, 'db');
      await fsp.writeFile(f, 'head');
      await runOk('fallocate', ['-o', '0', '-l', '200000', f]);
      t.is((await fsp.stat(f)).size, 200000);
      const content = await fsp.readFile(f);
      t.is(content.subarray(0, 4).toString(), 'head');
      t.true(content.subarray(4).every((b) => b === 0));
      await runOk('fallocate', ['-n', '-o', '0', '-l', '500000', f]);
      t.is((await fsp.stat(f)).size, 200000, 'KEEP_SIZE');
      const punch = await import('./helpers/rw').then((rw) => rw.run('fallocate', ['-p', '-o', '0', '-l', '4096', f]));
      t.not(punch.code, 0, 'punch hole refused');
      t.is((await fsp.readFile(f)).subarray(0, 4).toString(), 'head', 'nothing punched');
      const keyFor = await volumeKeys(m.cipherDir);
      t.is((await decryptCipherFile(keyFor, path.join(m.cipherDir, 'db'))).length, 200000);
    },
    kernel,
  );
});

test.serial('lseek SEEK_DATA / SEEK_HOLE: a sealed file is data from 0 to its end', async (t) => {
  t.timeout(60_000);
  await requirePrograms('python3');
  await withMasterMount(
    t,
    async (m) => {
      const f = path.join(m.mountpoint, 'sparse');
      await fsp.writeFile(f, 'x');
      await runOk('truncate', ['-s', '300000', f]);
      const py = 'import os,sys\nfd=os.open(sys.argv[1],os.O_RDONLY)\nprint(os.lseek(fd,1000,os.SEEK_DATA),os.lseek(fd,1000,os.SEEK_HOLE))\ntry:\n  os.lseek(fd,300000,os.SEEK_DATA)\nexcept OSError as e:\n  print(e.errno)\n';
      const out = (await runOk('python3', ['-c', py, f])).stdout.trim().split('\n');
      t.is(out[0], '1000 300000');
      t.is(out[1], '6', 'ENXIO past the end');
    },
    kernel,
  );
});

test.serial('the mount speaks the protocol itself: fuse.darefs, the log names the protocol version and request size', async (t) => {
  t.timeout(60_000);
  await withMasterMount(
    t,
    async (m) => {
      t.is(m.entry.fsType, 'fuse.darefs');
      const f = path.join(m.mountpoint, 'big');
      const data = Buffer.alloc(4 << 20, 7);
      await fsp.writeFile(f, data);
      t.true((await fsp.readFile(f)).equals(data));
      // The daemon's log names the transport and what INIT granted.
      await fsp.writeFile(path.join(m.mountpoint, 'x'), 'y');
      t.regex(m.output(), /own FUSE transport: protocol 7\.\d+, requests up to 1024 KiB/);
    },
    kernel,
  );
});

const NOBODY = 65534;
const AS_NOBODY = ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--'];

test.serial('a second uid through an --allow-other mount: rename2, fallocate and odd names are checked as any write is', async (t) => {
  t.timeout(90_000);
  await requirePrograms('setpriv', 'python3');
  await withMasterMount(
    t,
    async (m) => {
      const p = (n: string): string => path.join(m.mountpoint, n);
      // root's files in root's directory; nobody owns only `home`.
      await fsp.chmod(m.root, 0o755);
      await fsp.chmod(m.mountpoint, 0o755);
      await fsp.writeFile(p('secret'), 'root only', { mode: 0o600 });
      await fsp.writeFile(p('public'), 'world readable', { mode: 0o644 });
      await fsp.mkdir(p('home'));
      await fsp.chown(p('home'), NOBODY, NOBODY);
      const py = [
        'import ctypes, os, sys',
        'libc = ctypes.CDLL(None, use_errno=True)',
        'def rn(a, b, f):',
        '  r = libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), f)',
        "  return 'ok' if r == 0 else str(ctypes.get_errno())",
        'def fa(f, mode, off, n):',
        '  try:',
        '    fd = os.open(f, os.O_RDONLY)',
        '    os.posix_fallocate(fd, off, n) if mode == 0 else None',
        "    return 'ok'",
        '  except OSError as e:',
        '    return str(e.errno)',
        'def mk(d, name):',
        '  try:',
        '    os.close(os.open(os.path.join(os.fsencode(d), name), os.O_CREAT | os.O_WRONLY, 0o600))',
        "    return 'ok'",
        '  except OSError as e:',
        '    return str(e.errno)',
        'm = sys.argv[1]',
        "j = lambda *a: os.path.join(m, *a)",
        "print(rn(j('home/mine'), j('secret'), 2) if open(j('home/mine'), 'w').write('x') or True else '')",
        "print(rn(j('public'), j('home/taken'), 1))",
        "print(fa(j('public'), 0, 0, 1 << 20))",
        "print(mk(j('home'), b'bad\\xff\\xfe'))",
      ].join('\n');
      // Debian's python3 (test-deps), not a per-user shim nobody cannot run.
      const res = await runOk(AS_NOBODY[0], [...AS_NOBODY.slice(1), '/usr/bin/python3', '-c', py, m.mountpoint]);
      const [exchange, noreplace, falloc, badName] = res.stdout.trim().split('\n');
      t.is(exchange, '13', 'RENAME_EXCHANGE with root\'s file in root\'s directory: EACCES');
      t.is(noreplace, '13', 'RENAME_NOREPLACE out of root\'s directory: EACCES');
      t.is(falloc, '9', 'fallocate through a read-only descriptor: EBADF');
      t.is(badName, '22', 'a name that is not UTF-8: EINVAL, nothing made');
      t.is(await fsp.readFile(p('secret'), 'utf8'), 'root only');
      t.is((await fsp.stat(p('secret'))).size, 9);
      t.is((await fsp.stat(p('public'))).size, 14);
      t.deepEqual((await fsp.readdir(p('home'))).sort(), ['mine']);
      t.deepEqual(fs.readdirSync(path.join(m.cipherDir, 'home')).sort(), ['mine']);
    },
    { extra: () => ['--transport', 'kernel', '--allow-other'], stopTimeoutMs: 5000 },
  );
});

test.serial('fchmod and futimens through a handle reach the file the handle is open on, after a rename gave its old path to another file', async (t) => {
  t.timeout(60_000);
  await withMasterMount(
    t,
    async (m) => {
      const p = (n: string): string => path.join(m.mountpoint, n);
      await fsp.mkdir(p('d1'));
      await fsp.writeFile(p('d1/f'), 'opened');
      const fh = await fsp.open(p('d1/f'), 'r+');
      try {
        await fsp.rename(p('d1'), p('d2'));
        await fsp.mkdir(p('d1'));
        await fsp.writeFile(p('d1/f'), 'newcomer', { mode: 0o600 });
        await fh.chmod(0o640);
        await fh.utimes(1_000_000, 1_000_000);
      } finally {
        await fh.close();
      }
      const opened = await statOf(p('d2/f'));
      const newcomer = await statOf(p('d1/f'));
      t.is(opened.mode, '640');
      t.is(newcomer.mode, '600', 'the file now at the old path is untouched');
      t.is((await fsp.stat(p('d2/f'))).mtimeMs, 1_000_000_000);
      t.not((await fsp.stat(p('d1/f'))).mtimeMs, 1_000_000_000);
    },
    kernel,
  );
});
