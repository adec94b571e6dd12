// The ncrypt-mode password check against a hostile cipher directory (issue 10 item 7): junk files
// neither pass nor defeat it, and a directory where nothing can be checked is refused unless the
// user says --no-password-check.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { CLI, darefsMount, writeNcryptFile, writePassfile } from './helpers/darefs';
import { assertNoFuseMountsLeft, cleanupLeftovers, makeTestDirs, MountDirs, withMount } from './helpers/mount';
import { mountExpectingRefusal } from './helpers/refusal';

test.after.always(() => cleanupLeftovers());

async function dirsFor(t: { teardown(fn: () => Promise<void>): void }): Promise<MountDirs> {
  const dirs = await makeTestDirs();
  t.teardown(() => fsp.rm(dirs.root, { recursive: true, force: true }));
  return dirs;
}

/** Files an attacker (or plain bad luck) leaves in the cipher dir: none has a parsable package 0. */
async function plantJunk(dir: string): Promise<string[]> {
  const junk = Buffer.concat([randomBytes(32), Buffer.from([0x99]), randomBytes(99)]); // stream-sized, version 0x99
  const badLength = Buffer.concat([randomBytes(32), Buffer.from([0x20, 0x00, 0xff, 0xff]), randomBytes(96)]); // length field says 64 KiB
  const files: Array<[string, Buffer]> = [
    ['0-junk', junk],
    ['1-short', randomBytes(10)],
    ['2-bad-length', badLength],
    ['3-empty-stream', randomBytes(32)],
    ['a-junk', junk],
    ['Z-junk', junk],
  ];
  for (const [name, data] of files) await fsp.writeFile(path.join(dir, name), data);
  return files.map(([n]) => n);
}

test.serial('a wrong ncrypt password is refused even when junk files are scanned first', async (t) => {
  t.timeout(60_000);
  const dirs = await dirsFor(t);
  await writeNcryptFile(path.join(dirs.cipherDir, 'real.txt'), Buffer.from('sealed under the right password\n'));
  await plantJunk(dirs.cipherDir);
  await writePassfile(dirs, 'not the password');
  const before = (await fsp.readdir(dirs.cipherDir)).sort();
  const r = await mountExpectingRefusal(dirs, darefsMount(['--ncrypt'])(dirs));
  t.false(r.mounted, 'a wrong password must not mount');
  t.is(r.exit?.code, 3, r.output);
  t.regex(r.output, /wrong password for /);
  t.deepEqual((await fsp.readdir(dirs.cipherDir)).sort(), before, 'nothing created');
});

test.serial('only junk files: the mount refuses (nothing to check the password on), --no-password-check mounts', async (t) => {
  t.timeout(60_000);
  const dirs = await dirsFor(t);
  const junk = await plantJunk(dirs.cipherDir);
  await writePassfile(dirs, 'any password at all');
  const r = await mountExpectingRefusal(dirs, darefsMount(['--ncrypt'])(dirs));
  t.false(r.mounted);
  t.is(r.exit?.code, 1, r.output);
  t.regex(r.output, new RegExp(`cannot check the password for \\S+: none of its ${junk.length} files has a well-formed DARE package .*--no-password-check`));
  t.deepEqual((await fsp.readdir(dirs.cipherDir)).sort(), [...junk].sort());

  // Inside a subdirectory counts too: the scan is not only the top level.
  const nested = await dirsFor(t);
  await fsp.mkdir(path.join(nested.cipherDir, 'sub'));
  await fsp.writeFile(path.join(nested.cipherDir, 'sub', 'junk'), randomBytes(50));
  await writePassfile(nested, 'any password at all');
  const n = await mountExpectingRefusal(nested, darefsMount(['--ncrypt'])(nested));
  t.false(n.mounted);
  t.regex(n.output, /cannot check the password for \S+: none of its 1 file has/);

  await withMount(
    t,
    darefsMount(['--ncrypt', '--no-password-check']),
    async (m) => {
      t.true((await fsp.readdir(m.mountpoint)).includes('0-junk'));
    },
    {
      setup: async (d) => {
        await writePassfile(d, 'any password at all');
        await plantJunk(d.cipherDir);
      },
    },
  );
});

test.serial('the right password mounts past junk and past a file sealed under another password', async (t) => {
  t.timeout(60_000);
  await withMount(
    t,
    darefsMount(['--ncrypt']),
    async (m) => {
      t.is(await fsp.readFile(path.join(m.mountpoint, 'real.txt'), 'utf8'), 'mine\n');
    },
    {
      setup: async (d) => {
        await writePassfile(d);
        // Names sorting before real.txt, created before and after it: whichever the scan meets first.
        await writeNcryptFile(path.join(d.cipherDir, 'other-password'), Buffer.from('theirs\n'), undefined, undefined, 'someone else');
        await plantJunk(d.cipherDir);
        await writeNcryptFile(path.join(d.cipherDir, 'real.txt'), Buffer.from('mine\n'));
        await writeNcryptFile(path.join(d.cipherDir, 'another'), Buffer.from('theirs\n'), undefined, undefined, 'someone else');
      },
    },
  );
});

test.serial('an empty cipher directory, or one with only empty directories, mounts without a check', async (t) => {
  t.timeout(60_000);
  await withMount(
    t,
    darefsMount(['--ncrypt']),
    async (m) => {
      t.deepEqual(await fsp.readdir(m.mountpoint), ['docs']);
    },
    {
      setup: async (d) => {
        await writePassfile(d, 'a fresh password');
        await fsp.mkdir(path.join(d.cipherDir, 'docs'));
      },
    },
  );
});

test('mount --help documents --no-password-check and what it gives up', (t) => {
  const help = execFileSync(process.execPath, [CLI, 'mount', '--help'], { encoding: 'utf8' }).replace(/\s+/g, ' ');
  t.regex(help, /--no-password-check without a volume config \(--ncrypt, --keyfile alone\): mount even when no file in CIPHERDIR can check the password .* a wrong password then mounts, and new files are sealed under it/);
});

test.serial('no mount left behind', async (t) => {
  await assertNoFuseMountsLeft();
  t.pass();
});
