/**
 * Failures through the read-write mount: a full disk (a small tmpfs under the cipher directory),
 * a read-only mount, permission errors of the cipher directory passed through (EACCES from a
 * daemon without CAP_DAC_OVERRIDE, EPERM from immutable cipher files), the hidden `.darefs`
 * directory, and corrupt cipher files.
 */
import test from 'ava';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { MAX_PACKAGE } from '../src/dare';
import { prng } from './helpers/darefs';
import { MountDirs, assertNoFuseMountsLeft, cleanupLeftovers, sleep, withMount } from './helpers/mount';
import {
  decryptCipherFile,
  initMasterVolume,
  isMountPoint,
  masterMount,
  mountTmpfs,
  outcome,
  randomBytesFrom,
  readToEnd,
  requirePrograms,
  run,
  runOk,
  sha256,
  stopCleanly,
  volumeKeys,
  withMasterMount,
} from './helpers/rw';

test.after.always(async () => {
  await cleanupLeftovers();
  await assertNoFuseMountsLeft();
});

/** Names, types, modes, sizes, mtimes and content hashes of everything in a plain directory. */
function snapshot(dir: string): string {
  const lines: string[] = [];
  const walk = (rel: string): void => {
    for (const name of fs.readdirSync(path.join(dir, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const st = fs.lstatSync(path.join(dir, r));
      let what = `${r} ${st.mode.toString(8)} ${st.uid}:${st.gid} ${st.size} ${st.mtimeMs}`;
      if (st.isFile()) what += ` ${sha256(fs.readFileSync(path.join(dir, r)))}`;
      if (st.isSymbolicLink()) what += ` -> ${fs.readlinkSync(path.join(dir, r))}`;
      lines.push(what);
      if (st.isDirectory()) walk(r);
    }
  };
  walk('');
  return lines.join('\n');
}

test.serial('ENOSPC on a small tmpfs: the failing write/fsync says so, files read back as last synced, the daemon keeps working', async (t) => {
  t.timeout(120_000);
  await requirePrograms('mount', 'umount');
  const space = (dirs: MountDirs): string => path.join(dirs.root, 'space');
  const cipherOf = (dirs: MountDirs): string => path.join(space(dirs), 'cipher');
  let unmountTmpfs: (() => Promise<void>) | undefined;
  // Last resort; the harness also detaches every mount under its temp dir.
  t.teardown(async () => {
    await unmountTmpfs?.();
  });
  const P = 256 * 1024;
  const rand = prng(7);
  await withMount(
    t,
    masterMount({ cipherDir: cipherOf }),
    async (m) => {
      const mnt = (n: string): string => path.join(m.mountpoint, n);
      const cipherDir = cipherOf(m);

      // An earlier file, synced.
      const keep = randomBytesFrom(rand, 512 * 1024);
      await fsp.writeFile(mnt('keep.bin'), keep);
      const kf = await fsp.open(mnt('keep.bin'), 'r+');
      await kf.sync();
      await kf.close();

      // Grow a file chunk by chunk with an fsync after each until the disk is full.
      const big = await fsp.open(mnt('big.bin'), 'w+');
      const written: Buffer[] = [];
      let synced = 0;
      let failure = '';
      for (let i = 0; i < 40 && !failure; i++) {
        const chunk = randomBytesFrom(rand, P);
        const w = await outcome(big.write(chunk, 0, P, i * P));
        if (w !== 'ok') {
          failure = `write: ${w}`;
          break;
        }
        written.push(chunk);
        const s = await outcome(big.sync());
        if (s !== 'ok') failure = `fsync: ${s}`;
        else synced = written.length;
      }
      t.log(`big.bin: ${failure} after ${synced} synced chunks of 256 KiB`);
      t.regex(failure, /: ENOSPC$/, 'the write or fsync that does not fit fails with ENOSPC');
      t.true(synced >= 4, 'several chunks fitted before');
      const closed = await outcome(big.close());
      t.true(closed === 'ok' || closed === 'ENOSPC', `close: ${closed}`);
      const bigWant = Buffer.concat(written.slice(0, synced));
      t.is((await fsp.stat(mnt('big.bin'))).size, bigWant.length, 'big.bin has its last synced size');
      t.true((await fsp.readFile(mnt('big.bin'))).equals(bigWant), 'big.bin reads back whole as last synced');
      t.true((await fsp.readFile(mnt('keep.bin'))).equals(keep), 'the earlier file reads back');

      // A failure inside a write: unsealed data beyond the dirty-memory bound is sealed by the
      // write itself, which then fails; the file stays as it was on disk (empty).
      const c = await fsp.open(mnt('c.bin'), 'w+');
      let cFailure = '';
      for (let i = 0; i < 24 && !cFailure; i++) {
        const w = await outcome(c.write(Buffer.alloc(1 << 20, 7), 0, 1 << 20, i << 20));
        if (w !== 'ok') cFailure = `write ${i}: ${w}`;
      }
      const cClosed = await outcome(c.close());
      if (!cFailure) cFailure = `close: ${cClosed}`;
      t.log(`c.bin: ${cFailure}`);
      t.regex(cFailure, /ENOSPC$/, '24 MiB on a 4 MiB disk fails with ENOSPC');
      t.is((await fsp.readFile(mnt('c.bin'))).length, 0, 'c.bin reads back as before the failed flush (empty)');

      // Fill the tmpfs completely from outside the cipher directory.
      const filler = await fsp.open(path.join(space(m), 'filler'), 'w');
      let pos = 0;
      for (const size of [65536, 4096, 1]) {
        for (;;) {
          const r = await outcome(filler.write(Buffer.alloc(size, 1), 0, size, pos).then(({ bytesWritten }) => (pos += bytesWritten)));
          if (r !== 'ok') break;
        }
      }
      await filler.close();
      // A new file cannot even take its prefix: ENOSPC, and no name is left behind.
      const created = await outcome(fsp.writeFile(mnt('new.bin'), 'data'));
      t.is(created, 'ENOSPC', 'creating a file on a full disk');
      t.false((await fsp.readdir(m.mountpoint)).includes('new.bin'), 'no half-created file');
      t.false(fs.existsSync(path.join(cipherDir, 'new.bin')), 'no half-created cipher file');
      // Re-sealing a package in place needs no new space.
      const kh = await fsp.open(mnt('keep.bin'), 'r+');
      keep.write('in place on a full disk', 300_000);
      t.is(await outcome(kh.write(keep, 300_000, 23, 300_000)), 'ok');
      t.is(await outcome(kh.sync()), 'ok', 'an in-place re-seal fits on a full disk');
      await kh.close();

      // Free space: everything works again.
      await fsp.rm(path.join(space(m), 'filler'));
      await fsp.unlink(mnt('big.bin'));
      const small = randomBytesFrom(rand, 100_000);
      const sh = await fsp.open(mnt('small.bin'), 'w');
      await sh.write(small);
      await sh.sync();
      await sh.close();
      t.true((await fsp.readFile(mnt('small.bin'))).equals(small));
      t.true((await fsp.readFile(mnt('keep.bin'))).equals(keep));
      t.deepEqual((await fsp.readdir(m.mountpoint)).sort(), ['c.bin', 'keep.bin', 'small.bin']);

      await stopCleanly(t, m);
      t.deepEqual(fs.readdirSync(cipherDir).sort(), ['.darefs', 'c.bin', 'keep.bin', 'small.bin'], 'no temporary or hidden files left');
      const keyFor = await volumeKeys(cipherDir);
      t.true((await decryptCipherFile(keyFor, path.join(cipherDir, 'keep.bin'))).equals(keep), 'keep.bin decrypts');
      t.is((await decryptCipherFile(keyFor, path.join(cipherDir, 'c.bin'))).length, 0, 'c.bin decrypts (empty)');
      t.true((await decryptCipherFile(keyFor, path.join(cipherDir, 'small.bin'))).equals(small), 'small.bin decrypts');
      await unmountTmpfs!();
      t.false(await isMountPoint(space(m)), 'tmpfs unmounted');
    },
    {
      setup: async (dirs) => {
        unmountTmpfs = await mountTmpfs(space(dirs), '4m');
        await initMasterVolume(dirs, cipherOf(dirs));
      },
    },
  );
});

test.serial('a read-only mount refuses every change with EROFS; reads work; the cipher directory is untouched', async (t) => {
  t.timeout(90_000);
  await requirePrograms('mkfifo');
  let readOnly = false;
  await withMasterMount(
    t,
    async (m) => {
      const mnt = (n: string): string => path.join(m.mountpoint, n);
      const content = randomBytesFrom(prng(3), 200_000);
      await fsp.writeFile(mnt('a.bin'), content);
      await fsp.mkdir(mnt('d'));
      await fsp.mkdir(mnt('empty'));
      await fsp.writeFile(mnt('d/b.txt'), 'hello');
      await fsp.symlink('a.bin', mnt('s'));
      await stopCleanly(t, m);
      const before = snapshot(m.cipherDir);
      readOnly = true;
      await m.respawn();
      t.regex(m.entry.options, /(^|,)ro(,|$)/, 'mounted ro');

      t.true((await fsp.readFile(mnt('a.bin'))).equals(content), 'reads work');
      t.is(await fsp.readFile(mnt('d/b.txt'), 'utf8'), 'hello');
      t.is(await fsp.readlink(mnt('s')), 'a.bin');
      t.deepEqual((await fsp.readdir(m.mountpoint)).sort(), ['a.bin', 'd', 'empty', 's']);

      const changes: Array<[string, () => Promise<unknown>]> = [
        ['create', () => fsp.writeFile(mnt('new.txt'), 'x')],
        ['open for writing', () => fsp.open(mnt('a.bin'), 'r+').then((h) => h.close())],
        ['open O_TRUNC', () => fsp.open(mnt('a.bin'), 'w').then((h) => h.close())],
        ['append', () => fsp.appendFile(mnt('a.bin'), 'x')],
        ['truncate', () => fsp.truncate(mnt('a.bin'), 10)],
        ['unlink', () => fsp.unlink(mnt('a.bin'))],
        ['rename', () => fsp.rename(mnt('a.bin'), mnt('z.bin'))],
        ['rename across dirs', () => fsp.rename(mnt('d/b.txt'), mnt('b.txt'))],
        ['mkdir', () => fsp.mkdir(mnt('newdir'))],
        ['rmdir', () => fsp.rmdir(mnt('empty'))],
        ['chmod', () => fsp.chmod(mnt('a.bin'), 0o600)],
        ['chown', () => fsp.chown(mnt('a.bin'), 1234, 1234)],
        ['utimes', () => fsp.utimes(mnt('a.bin'), new Date(1e12), new Date(1e12))],
        ['symlink', () => fsp.symlink('a.bin', mnt('s2'))],
        ['link', () => fsp.link(mnt('a.bin'), mnt('hard'))],
      ];
      for (const [what, change] of changes) t.is(await outcome(change()), 'EROFS', what);
      const fifo = await run('mkfifo', [mnt('fifo')], { timeoutMs: 10_000 });
      t.not(fifo.code, 0);
      t.regex(fifo.stderr, /Read-only file system/, 'mkfifo (mknod)');
      await stopCleanly(t, m);
      t.is(snapshot(m.cipherDir), before, 'nothing in the cipher directory changed');
    },
    { extra: () => (readOnly ? ['--read-only'] : []) },
  );
});

test.serial('EACCES from the cipher directory passes through (daemon without CAP_DAC_OVERRIDE)', async (t) => {
  t.timeout(90_000);
  await requirePrograms('setpriv');
  // As root the daemon could write anything; without DAC override and DAC read-search it gets
  // the permission checks of an ordinary owner, which the cipher modes (set through the mount)
  // then decide. The test process stays root, and the mount has no default_permissions, so every
  // EACCES below comes from the daemon's own calls on the cipher directory.
  const drop = '-dac_override,-dac_read_search';
  await withMasterMount(
    t,
    async (m) => {
      const mnt = (n: string): string => path.join(m.mountpoint, n);
      const status = await fsp.readFile(`/proc/${m.daemon.pid}/status`, 'utf8');
      const eff = BigInt('0x' + /CapEff:\s*([0-9a-f]+)/.exec(status)![1]);
      t.is(eff & (1n << 1n), 0n, 'daemon runs without CAP_DAC_OVERRIDE');
      await fsp.writeFile(mnt('a.txt'), 'original');
      await fsp.mkdir(mnt('d'));
      await fsp.writeFile(mnt('d/f'), 'in d');
      await fsp.chmod(mnt('a.txt'), 0o444);
      await fsp.chmod(mnt('d'), 0o555);

      const refused: Array<[string, () => Promise<unknown>]> = [
        ['open 0444 file for writing', () => fsp.open(mnt('a.txt'), 'r+').then((h) => h.close())],
        ['open 0444 file for appending', () => fsp.open(mnt('a.txt'), 'a').then((h) => h.close())],
        ['open 0444 file O_TRUNC', () => fsp.writeFile(mnt('a.txt'), 'new')],
        ['truncate 0444 file', () => fsp.truncate(mnt('a.txt'), 1)],
        ['create in 0555 dir', () => fsp.writeFile(mnt('d/new'), 'x')],
        ['unlink in 0555 dir', () => fsp.unlink(mnt('d/f'))],
        ['mkdir in 0555 dir', () => fsp.mkdir(mnt('d/sub'))],
        ['rename in 0555 dir', () => fsp.rename(mnt('d/f'), mnt('d/g'))],
        ['rename out of 0555 dir', () => fsp.rename(mnt('d/f'), mnt('g'))],
        ['symlink in 0555 dir', () => fsp.symlink('f', mnt('d/s'))],
      ];
      for (const [what, op] of refused) t.is(await outcome(op()), 'EACCES', what);
      t.is(await fsp.readFile(mnt('a.txt'), 'utf8'), 'original', 'the 0444 file reads and is unchanged');
      t.is(await fsp.readFile(mnt('d/f'), 'utf8'), 'in d');
      await fsp.chmod(mnt('a.txt'), 0o000);
      t.is(await outcome(fsp.readFile(mnt('a.txt'))), 'EACCES', 'reading a 0000 file');
      // Permissions back: everything works again.
      await fsp.chmod(mnt('a.txt'), 0o644);
      await fsp.chmod(mnt('d'), 0o755);
      await fsp.writeFile(mnt('a.txt'), 'changed');
      await fsp.writeFile(mnt('d/new'), 'x');
      t.is(await fsp.readFile(mnt('a.txt'), 'utf8'), 'changed');
      t.deepEqual((await fsp.readdir(mnt('d'))).sort(), ['f', 'new']);
    },
    { wrap: ['setpriv', '--bounding-set', drop, '--inh-caps', drop, '--'] },
  );
});

test.serial('EPERM of immutable cipher files (chattr +i) passes through; reads still work', async (t) => {
  t.timeout(60_000);
  await requirePrograms('chattr', 'lsattr');
  await withMasterMount(t, async (m) => {
    const mnt = (n: string): string => path.join(m.mountpoint, n);
    await fsp.writeFile(mnt('a.txt'), 'original');
    await fsp.mkdir(mnt('d'));
    await fsp.writeFile(mnt('d/f'), 'in d');
    const immutable = [path.join(m.cipherDir, 'a.txt'), path.join(m.cipherDir, 'd')];
    const set = await run('chattr', ['+i', ...immutable], { timeoutMs: 10_000 });
    if (set.code !== 0) {
      t.fail(`chattr +i does not work on ${m.cipherDir}'s file system (${set.stderr.trim()}): cannot test EPERM pass-through here`);
      return;
    }
    try {
      const refused: Array<[string, () => Promise<unknown>]> = [
        ['open for writing', () => fsp.open(mnt('a.txt'), 'r+').then((h) => h.close())],
        ['open O_TRUNC', () => fsp.writeFile(mnt('a.txt'), 'new')],
        ['truncate', () => fsp.truncate(mnt('a.txt'), 1)],
        ['unlink', () => fsp.unlink(mnt('a.txt'))],
        ['rename', () => fsp.rename(mnt('a.txt'), mnt('b.txt'))],
        ['chmod', () => fsp.chmod(mnt('a.txt'), 0o600)],
        ['create in immutable dir', () => fsp.writeFile(mnt('d/new'), 'x')],
        ['unlink in immutable dir', () => fsp.unlink(mnt('d/f'))],
      ];
      for (const [what, op] of refused) t.is(await outcome(op()), 'EPERM', what);
      t.is(await fsp.readFile(mnt('a.txt'), 'utf8'), 'original');
      t.is(await fsp.readFile(mnt('d/f'), 'utf8'), 'in d');
    } finally {
      await runOk('chattr', ['-i', ...immutable], { timeoutMs: 10_000 });
    }
    await fsp.writeFile(mnt('a.txt'), 'changed');
    t.is(await fsp.readFile(mnt('a.txt'), 'utf8'), 'changed', 'writable again after chattr -i');
  });
});

test.serial('.darefs is invisible at the root and cannot be created, opened or renamed over', async (t) => {
  t.timeout(60_000);
  await withMasterMount(t, async (m) => {
    const mnt = (n: string): string => path.join(m.mountpoint, n);
    const meta = path.join(m.cipherDir, '.darefs');
    // The daemon's own redo journal lives there too and changes with every flush.
    const metaSnapshot = (): string => snapshot(meta).split('\n').filter((l) => !l.startsWith('journal ')).join('\n');
    const before = metaSnapshot();
    await fsp.writeFile(mnt('a.txt'), 'a');
    await fsp.mkdir(mnt('d'));
    t.deepEqual((await fsp.readdir(m.mountpoint)).sort(), ['a.txt', 'd'], 'root listing without .darefs');
    t.is(await outcome(fsp.lstat(mnt('.darefs'))), 'ENOENT');
    t.is(await outcome(fsp.readFile(mnt('.darefs/config.json'))), 'ENOENT');
    t.is(await outcome(fsp.readdir(mnt('.darefs'))), 'ENOENT');
    const attempts: Array<[string, () => Promise<unknown>]> = [
      ['create .darefs', () => fsp.writeFile(mnt('.darefs'), 'x')],
      ['create .darefs/config.json', () => fsp.writeFile(mnt('.darefs/config.json'), '{}')],
      ['mkdir .darefs', () => fsp.mkdir(mnt('.darefs'))],
      ['rename a file to .darefs', () => fsp.rename(mnt('a.txt'), mnt('.darefs'))],
      ['rename a dir to .darefs', () => fsp.rename(mnt('d'), mnt('.darefs'))],
      ['symlink .darefs', () => fsp.symlink('a.txt', mnt('.darefs'))],
      ['link .darefs', () => fsp.link(mnt('a.txt'), mnt('.darefs'))],
      ['rename .darefs away', () => fsp.rename(mnt('.darefs'), mnt('x'))],
      ['unlink .darefs/config.json', () => fsp.unlink(mnt('.darefs/config.json'))],
      ['create a store temp name', () => fsp.writeFile(mnt('d/.darefs-tmp.0123456789abcdef'), 'x')],
    ];
    for (const [what, op] of attempts) t.not(await outcome(op()), 'ok', what);
    t.deepEqual((await fsp.readdir(m.mountpoint)).sort(), ['a.txt', 'd'], 'root listing unchanged');
    t.deepEqual(await fsp.readdir(mnt('d')), [], 'nothing created in d');
    t.is(await fsp.readFile(mnt('a.txt'), 'utf8'), 'a');
    // Only the root's .darefs is reserved: a subdirectory may hold that name.
    await fsp.writeFile(mnt('d/.darefs'), 'an ordinary file');
    t.is(await fsp.readFile(mnt('d/.darefs'), 'utf8'), 'an ordinary file');
    t.is(metaSnapshot(), before, 'the metadata directory is unchanged');
    t.deepEqual(fs.readdirSync(m.cipherDir).sort(), ['.darefs', 'a.txt', 'd']);
  });
});

test.serial('corrupt cipher files are listed; reading them fails with EIO; the rest keeps working', async (t) => {
  t.timeout(60_000);
  const good = randomBytesFrom(prng(11), 150_000);
  await withMasterMount(
    t,
    async (m) => {
      const mnt = (n: string): string => path.join(m.mountpoint, n);
      // A file written through the mount, then one ciphertext byte of package 1 flipped.
      await fsp.writeFile(mnt('tampered.bin'), good);
      await fsp.writeFile(mnt('good.bin'), good);
      // Once the checkpoint has put them in place (--commit 0.2 below) and closed them.
      await sleep(800);
      const tampered = path.join(m.cipherDir, 'tampered.bin');
      const raw = fs.readFileSync(tampered);
      raw[32 + MAX_PACKAGE + 100] ^= 1;
      fs.writeFileSync(tampered, raw);

      t.deepEqual((await fsp.readdir(m.mountpoint)).sort(), ['badlen.bin', 'garbage.bin', 'good.bin', 'short.bin', 'tampered.bin']);
      for (const name of ['badlen.bin', 'short.bin']) {
        const st = await fsp.stat(mnt(name));
        t.true(st.isFile(), `${name} stats as a file`);
        t.is(st.size, 0, `${name}: an impossible cipher size shows as 0`);
      }
      for (const name of ['badlen.bin', 'short.bin', 'garbage.bin', 'tampered.bin']) {
        t.is(await outcome(readToEnd(mnt(name))), 'EIO', `reading ${name}`);
      }
      // The packages before the bad one of the tampered file still read.
      const fh = await fsp.open(mnt('tampered.bin'), 'r');
      try {
        const head = Buffer.alloc(1000);
        await fh.read(head, 0, 1000, 0);
        t.true(head.equals(good.subarray(0, 1000)), 'package 0 of the tampered file');
        t.is(await outcome(fh.read(Buffer.alloc(1000), 0, 1000, 65536 + 50)), 'EIO', 'package 1 of the tampered file');
      } finally {
        await fh.close();
      }
      t.is(await outcome(fsp.appendFile(mnt('badlen.bin'), 'x')), 'EIO', 'writing to an invalid file');
      t.true((await fsp.readFile(mnt('good.bin'))).equals(good), 'a good file still reads');
      await fsp.writeFile(mnt('new.bin'), 'new');
      t.is(await fsp.readFile(mnt('new.bin'), 'utf8'), 'new', 'and writes still work');
      t.regex(m.output(), /badlen\.bin/, 'the log names the invalid file');
      t.regex(m.output(), /tampered\.bin/, 'the log names the tampered file');
    },
    {
      extra: () => ['--commit', '0.2'],
      setup: async (dirs) => {
        const r = prng(12);
        fs.writeFileSync(path.join(dirs.cipherDir, 'short.bin'), randomBytesFrom(r, 20));
        fs.writeFileSync(path.join(dirs.cipherDir, 'badlen.bin'), randomBytesFrom(r, 32 + MAX_PACKAGE + 10));
        fs.writeFileSync(path.join(dirs.cipherDir, 'garbage.bin'), randomBytesFrom(r, 32 + 200 + 32));
      },
    },
  );
});

