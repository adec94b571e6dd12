/**
 * Sealed symlinks through a real mount (FORMAT.md §7, issue 10 item 4). A symlink made through
 * the mount is stored sealed; a symlink planted in the cipher directory (the directory is
 * hostile: FORMAT.md §6), or a sealed one modified there, is EIO with one log line and is never
 * followed, so it cannot lead a program's writes outside the volume.
 */
import test from 'ava';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Cipher, PREFIX_SIZE, SEALED_LINK_MARKER, decodeSealedLink, openDecodedLink } from '../src/dare';
import { CLI, darefsMount, passfile, writeNcryptFile, writePassfile } from './helpers/darefs';
import { VECTOR_PASSWORD, ncryptKey } from './helpers/keys-for-tests';
import { assertNoFuseMountsLeft, cleanupLeftovers, withMount } from './helpers/mount';
import { KeyFor, initMasterVolume, masterMount, outcome, requirePrograms, run, runOk, stopCleanly, volumeKeys, withMasterMount } from './helpers/rw';

test.after.always(async () => {
  await cleanupLeftovers();
  await assertNoFuseMountsLeft();
});

/** The target a cipher symlink holds, opened as the daemon would (throws unless it authenticates). */
function openStored(keyFor: KeyFor, cipherLink: string): { target: string; cipher: number } {
  const stored = fs.readlinkSync(cipherLink, { encoding: 'buffer' });
  const decoded = decodeSealedLink(stored);
  return { target: openDecodedLink(decoded, keyFor(Buffer.from(decoded.prefix))).toString(), cipher: decoded.package[1] };
}

for (const cipher of ['aes', 'chacha'] as const) {
  test.serial(`${cipher}: ln -s, readlink and ls -l through the mount; the cipher entry holds the sealed target; kept across a remount`, async (t) => {
    t.timeout(90_000);
    await requirePrograms('ln', 'readlink', 'stat');
    await withMount(
      t,
      masterMount(),
      async (m) => {
        const mnt = (n: string): string => path.join(m.mountpoint, n);
        const links: Record<string, string> = {
          rel: 'dir/target',
          dangling: 'nowhere/at/all',
          abs: '/etc/hostname',
          utf8: 'répertoire/→ ünïcödé',
          long: 'x/'.repeat(1499) + 'yy',
        };
        await fsp.mkdir(mnt('dir'));
        await fsp.writeFile(mnt('dir/target'), 'target content');
        for (const [name, target] of Object.entries(links)) await runOk('ln', ['-s', target, mnt(name)]);
        t.is(Buffer.byteLength(links.long), 3000);

        const keyFor = await volumeKeys(m.cipherDir);
        const check = async (when: string): Promise<void> => {
          for (const [name, target] of Object.entries(links)) {
            t.is((await runOk('readlink', [mnt(name)])).stdout.replace(/\n$/, ''), target, `${when}: readlink ${name}`);
            const st = await fsp.lstat(mnt(name));
            t.true(st.isSymbolicLink(), `${when}: ${name} is a symlink`);
            t.is(st.size, Buffer.byteLength(target), `${when}: lstat size of ${name} is the target's length`);
            t.is(Number((await runOk('stat', ['-c', '%s', mnt(name)])).stdout), Buffer.byteLength(target), `${when}: stat -c %s ${name}`);
            const cipherLink = path.join(m.cipherDir, name);
            t.true(fs.lstatSync(cipherLink).isSymbolicLink(), `${when}: cipher entry ${name} is a symlink`);
            const stored = fs.readlinkSync(cipherLink);
            t.true(stored.startsWith(SEALED_LINK_MARKER), `${when}: ${name} stored sealed`);
            t.false(stored.includes(target), `${when}: ${name}: the target is not in the cipher directory`);
            t.true(Buffer.byteLength(stored) < 4096);
            t.deepEqual(openStored(keyFor, cipherLink), { target, cipher: cipher === 'aes' ? Cipher.AES_256_GCM : Cipher.CHACHA20_POLY1305 }, `${when}: ${name} opens under the volume key`);
          }
          t.is(await fsp.readFile(mnt('rel'), 'utf8'), 'target content', `${when}: reading through a symlink`);
        };
        await check('mounted');
        t.is(await outcome(fsp.symlink('z'.repeat(3001), mnt('toolong'))), 'ENAMETOOLONG', 'over 3000 bytes');
        t.false(fs.existsSync(path.join(m.cipherDir, 'toolong')));
        // Renamed, the sealed target goes with it (it is bound to no name).
        await fsp.rename(mnt('rel'), mnt('dir/rel2'));
        t.is(await fsp.readlink(mnt('dir/rel2')), 'dir/target');
        await fsp.rename(mnt('dir/rel2'), mnt('rel'));

        await stopCleanly(t, m);
        await m.respawn();
        await check('after a remount');
      },
      { setup: (dirs) => initMasterVolume(dirs, dirs.cipherDir, ['--cipher', cipher]) },
    );
  });
}

test.serial('attack: a plain symlink planted in the cipher directory is EIO, never followed: no write lands outside; one log line; fsck names it', async (t) => {
  t.timeout(90_000);
  await withMasterMount(t, async (m) => {
    const mnt = (n: string): string => path.join(m.mountpoint, n);
    const outside = path.join(m.root, 'outside');
    await fsp.mkdir(outside);
    // What a sync client or a NAS could do while the volume is mounted.
    await fsp.symlink(outside, path.join(m.cipherDir, 'Documents'));

    t.is(await outcome(fsp.readlink(mnt('Documents'))), 'EIO', 'readlink');
    t.not(await outcome(fsp.writeFile(mnt('Documents/x'), 'secret plaintext')), 'ok', 'a write through it fails');
    t.not(await outcome(fsp.mkdir(mnt('Documents/sub'))), 'ok', 'so does mkdir');
    t.not(await outcome(fsp.readdir(mnt('Documents'))), 'ok', 'and readdir');
    t.deepEqual(await fsp.readdir(outside), [], 'nothing appeared outside the volume');
    t.true((await fsp.lstat(mnt('Documents'))).isSymbolicLink(), 'listed as a symlink');

    const lines = m.output().split('\n').filter((l) => l.includes('Documents'));
    t.is(lines.length, 1, `one log line:\n${lines.join('\n')}`);
    t.regex(lines[0] ?? '', /symlink \/Documents: target is not sealed/);
    t.false(m.output().includes(outside), 'the stored target is never logged');

    // A sealed target with one character changed.
    await fsp.writeFile(mnt('f'), 'content');
    await fsp.symlink('f', mnt('good'));
    await fsp.symlink('f', mnt('tampered'));
    const cipherLink = path.join(m.cipherDir, 'tampered');
    const stored = fs.readlinkSync(cipherLink);
    const i = SEALED_LINK_MARKER.length + 60;
    const changed = stored.slice(0, i) + (stored[i] === 'A' ? 'B' : 'A') + stored.slice(i + 1);
    fs.unlinkSync(cipherLink);
    fs.symlinkSync(changed, cipherLink);
    t.is(await outcome(fsp.readlink(mnt('tampered'))), 'EIO', 'tampered sealed target');
    t.is(await outcome(fsp.readFile(mnt('tampered'))), 'EIO', 'not followed either');
    t.regex(m.output(), /symlink \/tampered: sealed target: authentication failed/);
    t.is(await fsp.readlink(mnt('good')), 'f', 'the untouched link still reads');

    await stopCleanly(t, m);
    const res = await run(process.execPath, [CLI, 'fsck', '--json', '--passfile', passfile(m), m.cipherDir], { timeoutMs: 60_000 });
    const report = JSON.parse(res.stdout) as { clean: boolean; files: Array<{ path: string; status: string; type?: string; message?: string }> };
    t.false(report.clean);
    t.is(res.code, 6, 'exit 6, as for damaged files');
    const byPath = new Map(report.files.map((f) => [f.path, f]));
    t.like(byPath.get('Documents'), { status: 'damaged', type: 'symlink' });
    t.regex(byPath.get('Documents')?.message ?? '', /not sealed/);
    t.like(byPath.get('tampered'), { status: 'damaged', type: 'symlink' });
    t.regex(byPath.get('tampered')?.message ?? '', /authentication failed/);
    t.like(byPath.get('good'), { status: 'ok', type: 'symlink' });
    t.false(JSON.stringify(report).includes(outside), 'fsck does not quote the stored target');
    const text = await run(process.execPath, [CLI, 'fsck', '--passfile', passfile(m), m.cipherDir], { timeoutMs: 60_000 });
    t.regex(text.stdout, /^Documents: DAMAGED: symlink: target is not sealed/m);
    t.regex(text.stdout, /^tampered: DAMAGED: symlink: sealed target: authentication failed/m);
    t.deepEqual(await fsp.readdir(outside), [], 'fsck did not follow it either');
  });
});

test.serial('ncrypt mode: symlinks sealed under the password (scrypt of the prefix), readable after a remount', async (t) => {
  t.timeout(90_000);
  await withMount(
    t,
    darefsMount(['--ncrypt']),
    async (m) => {
      const link = path.join(m.mountpoint, 'link');
      await fsp.symlink('f', link);
      t.is(await fsp.readlink(link), 'f');
      t.is(await fsp.readFile(link, 'utf8'), 'plain text');
      const stored = fs.readlinkSync(path.join(m.cipherDir, 'link'), { encoding: 'buffer' });
      const decoded = decodeSealedLink(stored);
      t.is(decoded.prefix.length, PREFIX_SIZE);
      t.is(openDecodedLink(decoded, await ncryptKey(VECTOR_PASSWORD, Buffer.from(decoded.prefix))).toString(), 'f');
      await stopCleanly(t, m);
      await m.respawn();
      t.is(await fsp.readlink(link), 'f');
    },
    {
      setup: async (dirs) => {
        await writePassfile(dirs);
        await writeNcryptFile(path.join(dirs.cipherDir, 'f'), Buffer.from('plain text'));
      },
    },
  );
});
