/**
 * user.* extended attributes on a volume with encrypted names (FORMAT.md §8, src/store/xattrs.ts),
 * through a real mount: what programs see is the plaintext (set, get, list, remove, flags, size
 * queries, empty and binary values, names that are not UTF-8, the longest name), while the cipher
 * inode holds neither the names nor the values in the clear. The cipher directory is hostile: a
 * value changed there reads EIO with a log line naming the file and attribute, an attribute
 * planted there is not listed, and a value too large once sealed gets the cipher file system's own
 * errno.
 */
import test from 'ava';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { CONFIG_DIR } from '../src/keys';
import { loadSysCalls, splitNames } from '../src/sys';
import { assertNoFuseMountsLeft, cleanupLeftovers } from './helpers/mount';
import { PY_RECORDER, py, requirePrograms, runOk, stopCleanly, withMasterMount } from './helpers/rw';

test.after.always(async () => {
  await cleanupLeftovers();
  await assertNoFuseMountsLeft();
});

const ENCRYPTED = { init: ['--encrypt-names'] };

function sys() {
  const calls = loadSysCalls().calls;
  if (!calls) throw new Error('native/darefs_sys is not built (npm install builds it)');
  return calls;
}

/** The one cipher entry of a given kind (the volume holds one file and at most one directory). */
function cipherEntry(cipherDir: string, kind: 'file' | 'dir'): string {
  const found = fs
    .readdirSync(cipherDir)
    .filter((e) => e !== CONFIG_DIR)
    .map((e) => path.join(cipherDir, e))
    .filter((p) => (kind === 'file' ? fs.lstatSync(p).isFile() : fs.lstatSync(p).isDirectory()));
  if (found.length !== 1) throw new Error(`expected one cipher ${kind}, found ${found.length}`);
  return found[0];
}

/** The user.* attributes stored on a cipher inode: name -> value. */
function stored(file: string): Map<string, Buffer> {
  const names = splitNames(sys().llistxattr(file)).filter((n) => n.startsWith('user.'));
  return new Map(names.map((n) => [n, sys().lgetxattr(file, n)]));
}

/** Python making the raw calls (bytes names, flags, ctypes for size queries); prints JSON results. */
const SCRIPT = PY_RECORDER + String.raw`
import ctypes, errno, json, os, sys
f, d = sys.argv[1], sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
libc.getxattr.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
libc.getxattr.restype = ctypes.c_ssize_t
def size_of(name):
    n = libc.getxattr(f.encode(), name, None, 0)
    if n < 0:
        e = ctypes.get_errno(); raise OSError(e, os.strerror(e))
    return n
raw = b'user.\xff\xfe-raw'
longest = 'user.' + 'L' * 159
rec('set', lambda: os.setxattr(f, 'user.color', b'blue'))
rec('set empty', lambda: os.setxattr(f, 'user.empty', b''))
rec('set binary', lambda: os.setxattr(f, 'user.bin', bytes(range(256))))
rec('set raw name', lambda: os.setxattr(f, raw, b'raw value'))
rec('set longest', lambda: os.setxattr(f, longest, b'L'))
rec('set too long', lambda: os.setxattr(f, longest + 'L', b'L'))
rec('get too long', lambda: os.getxattr(f, longest + 'L'))
rec('set bare', lambda: os.setxattr(f, 'user.', b'x'))
rec('get', lambda: os.getxattr(f, 'user.color'))
rec('get empty', lambda: os.getxattr(f, 'user.empty'))
rec('get binary', lambda: os.getxattr(f, 'user.bin'))
rec('get raw name', lambda: os.getxattr(f, raw))
rec('get longest', lambda: os.getxattr(f, longest))
rec('get missing', lambda: os.getxattr(f, 'user.nope'))
rec('size query', lambda: size_of(b'user.bin'))
rec('size query empty', lambda: size_of(b'user.empty'))
rec('create existing', lambda: os.setxattr(f, 'user.color', b'red', os.XATTR_CREATE))
rec('replace missing', lambda: os.setxattr(f, 'user.nope', b'red', os.XATTR_REPLACE))
rec('replace', lambda: os.setxattr(f, 'user.color', b'green', os.XATTR_REPLACE))
rec('get replaced', lambda: os.getxattr(f, 'user.color'))
rec('list', lambda: sorted(os.fsencode(n).hex() for n in os.listxattr(f)))
rec('remove', lambda: os.removexattr(f, 'user.color'))
rec('remove missing', lambda: os.removexattr(f, 'user.color'))
rec('get removed', lambda: os.getxattr(f, 'user.color'))
rec('remove raw name', lambda: os.removexattr(f, raw))
rec('set raw name again', lambda: os.setxattr(f, raw, b'raw value 2'))
rec('list after', lambda: sorted(os.fsencode(n).hex() for n in os.listxattr(f)))
rec('dir set', lambda: os.setxattr(d, 'user.dir', b'D'))
rec('dir get', lambda: os.getxattr(d, 'user.dir'))
print(json.dumps(out))
`;

const hex = (s: string | Buffer): string => Buffer.from(s).toString('hex');
const RAW_NAME = Buffer.concat([Buffer.from('user.'), Buffer.from([0xff, 0xfe]), Buffer.from('-raw')]);
/**
 * fuse-native passes names as UTF-8 strings, so a name that is not UTF-8 cannot cross it (EINVAL
 * to set, ENODATA to find: never a wrong name); the own transport passes them as bytes.
 */
const LOSSY = process.env.DAREFS_TRANSPORT === 'fuse-native';
/** What a call with the non-UTF-8 name answers: `ok` on the own transport, `lossy` on fuse-native. */
const rawName = (ok: [string, string, unknown?], lossy: string): [string, string, unknown?] => (LOSSY ? [ok[0], lossy] : ok);
const withRaw = <T>(items: T[], raw: T): T[] => (LOSSY ? items : [...items, raw]);
const LONGEST = 'user.' + 'L'.repeat(159);

test.serial('encrypted names: user.* attributes round trip (flags, empty, binary, non-UTF-8 and longest names, size queries); the cipher inode holds only sealed names and values; kept across a remount', async (t) => {
  t.timeout(90_000);
  await requirePrograms('python3');
  await withMasterMount(
    t,
    async (m) => {
      const f = path.join(m.mountpoint, 'report.txt');
      const d = path.join(m.mountpoint, 'dir');
      await fsp.writeFile(f, 'contents');
      await fsp.mkdir(d);
      const res = await runOk('python3', ['-c', SCRIPT, f, d], { timeoutMs: 30_000 });
      const got = JSON.parse(res.stdout) as Array<[string, string, unknown?]>;
      const listBefore = withRaw([hex('user.bin'), hex('user.color'), hex('user.empty'), hex(LONGEST)], hex(RAW_NAME)).sort();
      const listAfter = withRaw([hex('user.bin'), hex('user.empty'), hex(LONGEST)], hex(RAW_NAME)).sort();
      t.deepEqual(got, [
        ['set', 'ok', null],
        ['set empty', 'ok', null],
        ['set binary', 'ok', null],
        rawName(['set raw name', 'ok', null], 'EINVAL'),
        ['set longest', 'ok', null],
        ['set too long', 'ERANGE'],
        ['get too long', 'ENODATA'],
        ['set bare', 'EINVAL'],
        ['get', 'ok', hex('blue')],
        ['get empty', 'ok', ''],
        ['get binary', 'ok', Buffer.from(Array.from({ length: 256 }, (_, i) => i)).toString('hex')],
        rawName(['get raw name', 'ok', hex('raw value')], 'ENODATA'),
        ['get longest', 'ok', hex('L')],
        ['get missing', 'ENODATA'],
        ['size query', 'ok', 256],
        ['size query empty', 'ok', 0],
        ['create existing', 'EEXIST'],
        ['replace missing', 'ENODATA'],
        ['replace', 'ok', null],
        ['get replaced', 'ok', hex('green')],
        ['list', 'ok', listBefore],
        ['remove', 'ok', null],
        ['remove missing', 'ENODATA'],
        ['get removed', 'ENODATA'],
        rawName(['remove raw name', 'ok', null], 'ENODATA'),
        rawName(['set raw name again', 'ok', null], 'EINVAL'),
        ['list after', 'ok', listAfter],
        ['dir set', 'ok', null],
        ['dir get', 'ok', hex('D')],
      ]);

      // The cipher inode: as many attributes, each sealed; no name or value in the clear.
      const onFile = stored(cipherEntry(m.cipherDir, 'file'));
      t.is(onFile.size, LOSSY ? 3 : 4);
      const plainValues = [Buffer.from('raw value 2'), Buffer.from(Array.from({ length: 16 }, (_, i) => i + 100))];
      for (const [name, value] of onFile) {
        t.regex(name, /^user\.[A-Za-z0-9_-]+$/);
        t.true(name.length <= 255, name);
        for (const clear of ['bin', 'empty', 'raw', 'LLLL']) t.false(name.includes(clear), `${name} shows ${clear}`);
        for (const clear of plainValues) t.false(value.includes(clear), `value of ${name} shows plaintext`);
      }
      // prefix (32) + one package (16 + n + 16); the empty value is the prefix alone.
      t.deepEqual([...onFile.values()].map((v) => v.length).sort((a, b) => a - b), withRaw([32, 32 + 1 + 32, 32 + 256 + 32], 32 + 11 + 32).sort((a, b) => a - b));
      const onDir = stored(cipherEntry(m.cipherDir, 'dir'));
      t.is(onDir.size, 1);
      t.false([...onDir.keys()][0].includes('dir'));

      await stopCleanly(t, m);
      await m.respawn();
      const dump = await py('import json\nprint(json.dumps(sorted([os.fsencode(n).hex(), os.getxattr(sys.argv[1], n).hex()] for n in os.listxattr(sys.argv[1]))))', f);
      t.deepEqual(
        JSON.parse(dump),
        withRaw(
          [
            [hex('user.bin'), Buffer.from(Array.from({ length: 256 }, (_, i) => i)).toString('hex')],
            [hex('user.empty'), ''],
            [hex(LONGEST), hex('L')],
          ],
          [hex(RAW_NAME), hex('raw value 2')],
        ).sort(),
        'after a remount',
      );
    },
    ENCRYPTED,
  );
});

test.serial('encrypted names, hostile cipher inode: a changed value reads EIO with a log line naming file and attribute; a planted attribute is not listed; too large once sealed: the file system\'s errno', async (t) => {
  t.timeout(90_000);
  await requirePrograms('python3');
  await withMasterMount(
    t,
    async (m) => {
      const f = path.join(m.mountpoint, 'notes.txt');
      await fsp.writeFile(f, 'x');
      t.is(await py('os.setxattr(sys.argv[1], "user.note", b"confidential"); print("ok")', f), 'ok');
      const cipherFile = cipherEntry(m.cipherDir, 'file');
      const [[sealedName, sealedValue]] = [...stored(cipherFile)];

      // One flipped byte of the sealed value: EIO for the read and for the size query.
      const bad = Buffer.from(sealedValue);
      bad[bad.length - 5] ^= 0x40;
      sys().lsetxattr(cipherFile, sealedName, bad, 0);
      t.is(await py('os.getxattr(sys.argv[1], "user.note"); print("ok")', f), 'EIO');
      const sizeQuery =
        'import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.getxattr.restype = ctypes.c_ssize_t\n' +
        'n = libc.getxattr(sys.argv[1].encode(), b"user.note", None, ctypes.c_size_t(0))\nprint(n if n >= 0 else errno.errorcode[ctypes.get_errno()])';
      t.is(await py(sizeQuery, f), 'EIO');
      t.regex(m.output(), /\/notes\.txt: extended attribute "user\.note": sealed value: authentication failed/);
      for (const enc of ['hex', 'base64', 'base64url'] as const) t.false(m.output().includes(bad.subarray(32, 48).toString(enc)), `log quotes the stored value (${enc})`);
      // Cut to its prefix, it would be an empty value; cut anywhere else, it does not open.
      sys().lsetxattr(cipherFile, sealedName, sealedValue.subarray(0, 40), 0);
      t.is(await py('os.getxattr(sys.argv[1], "user.note"); print("ok")', f), 'EIO');
      sys().lsetxattr(cipherFile, sealedName, sealedValue, 0);
      t.is(await py('print(os.getxattr(sys.argv[1], "user.note").decode())', f), 'confidential', 'put back: opens again');

      // Planted in the clear on the cipher inode: not listed, not found, not removed through the mount.
      sys().lsetxattr(cipherFile, 'user.foo', Buffer.from('bar'), 0);
      t.is(await py('print(sorted(os.listxattr(sys.argv[1])))', f), "['user.note']");
      t.regex(m.output(), /listxattr \/notes\.txt: left out 1 attribute of \S+ whose names do not authenticate: "user\.foo"/);
      t.is(await py('os.getxattr(sys.argv[1], "user.foo"); print("ok")', f), 'ENODATA');
      t.is(await py('os.removexattr(sys.argv[1], "user.foo"); print("ok")', f), 'ENODATA');
      t.deepEqual(sys().lgetxattr(cipherFile, 'user.foo'), Buffer.from('bar'), 'left where it was');

      // Too large once sealed (64 bytes more): the cipher file system's own answer. Its limit is
      // found on a scratch file beside the cipher directory, with a name as long as the sealed one.
      const scratch = path.join(m.root, 'scratch');
      fs.writeFileSync(scratch, '');
      const scratchName = 'user.' + 's'.repeat(sealedName.length - 5);
      const errnoOf = (n: number): string => {
        try {
          sys().lsetxattr(scratch, scratchName, Buffer.alloc(n), 0);
          return 'ok';
        } catch (err) {
          return (err as NodeJS.ErrnoException).code ?? String(err);
        }
      };
      let lo = 0; // largest value size the file system takes
      for (let hi = 65536 + 1; hi - lo > 1; ) {
        const mid = (lo + hi) >> 1;
        if (errnoOf(mid) === 'ok') lo = mid;
        else hi = mid;
      }
      const cases: Array<[number, string]> = [[65536, errnoOf(65536 + 64)]];
      if (lo < 65536) cases.push([lo - 64, 'ok'], [lo - 63, errnoOf(lo + 1)]);
      t.log(`cipher file system: values up to ${lo} bytes; cases ${JSON.stringify(cases)}`);
      t.is(cases[0][1], 'E2BIG', 'XATTR_SIZE_MAX is 64 KiB: the largest value does not fit once sealed');
      for (const [n, expected] of cases) {
        const big = path.join(m.mountpoint, `big${n}`);
        await fsp.writeFile(big, '');
        t.is(await py(`os.setxattr(sys.argv[1], "user.note", bytes(${n})); print("ok")`, big), expected, `${n} bytes`);
        if (expected === 'ok') t.is(await py('print(len(os.getxattr(sys.argv[1], "user.note")))', big), String(n));
        else t.is(await py('print(os.listxattr(sys.argv[1]))', big), '[]', 'nothing stored');
      }
    },
    ENCRYPTED,
  );
});
