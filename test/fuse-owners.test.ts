/**
 * settleNewEntry: the owner and mode a new entry gets (src/fuse/owners.ts), on a plain directory.
 * The mount-level behaviour is in mount-owners; here the cases a mount test cannot easily reach:
 * a descriptor target, and a daemon that may not give files away (run under setpriv as uid 1000).
 */
import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { daemonIdentity, settleNewEntry, type NewEntry } from '../src/fuse/owners';
import { requirePrograms, runOk } from './helpers/rw';

function tempDir(t: import('ava').ExecutionContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'darefs-owners-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const mode = (p: string): string => (fs.lstatSync(p).mode & 0o7777).toString(8);

/** An entry changed by path (ops.ts goes through the confined cipher directory instead). */
const byPath = (p: string, parent: string): NewEntry => ({
  chown: (uid, gid) => fs.lchownSync(p, uid, gid),
  chmod: (m) => fs.chmodSync(p, m),
  parentMode: () => fs.statSync(parent).mode,
});

test('root daemon: the caller owns it, the mode is exact (no daemon umask), setuid survives the chown', (t) => {
  const dir = tempDir(t);
  const me = { ...daemonIdentity(), umask: 0o022 };
  const f = path.join(dir, 'f');
  const fd = fs.openSync(f, 'wx', 0o600);
  try {
    const entry: NewEntry = { chown: (u, g) => fs.fchownSync(fd, u, g), chmod: (m) => fs.fchmodSync(fd, m), parentMode: () => fs.statSync(dir).mode };
    settleNewEntry(entry, 'file', { uid: 1000, gid: 1001 }, 0o4775, me);
  } finally {
    fs.closeSync(fd);
  }
  const st = fs.lstatSync(f);
  t.deepEqual([st.uid, st.gid, mode(f)], [1000, 1001, '4775']);

  // The caller is the daemon itself: nothing to give; the umask-dropped bits come back.
  const g = path.join(dir, 'g');
  fs.writeFileSync(g, '', { mode: 0o666 });
  settleNewEntry(byPath(g, dir), 'file', { uid: me.uid, gid: me.gid }, 0o666, me);
  t.deepEqual([fs.lstatSync(g).uid, mode(g)], [me.uid, '666']);

  // A setgid directory: the group is the directory's, and a new directory inherits setgid.
  const sg = path.join(dir, 'sg');
  fs.mkdirSync(sg);
  fs.chownSync(sg, 0, 50);
  fs.chmodSync(sg, 0o2777);
  const d = path.join(sg, 'd');
  fs.mkdirSync(d, 0o775);
  settleNewEntry(byPath(d, sg), 'dir', { uid: 1000, gid: 1001 }, 0o775, me);
  const ds = fs.lstatSync(d);
  t.deepEqual([ds.uid, ds.gid, mode(d)], [1000, 50, '2775']);

  // A symlink: owner only, never followed.
  const l = path.join(dir, 'l');
  fs.symlinkSync('f', l);
  settleNewEntry(byPath(l, dir), 'symlink', { uid: 1002, gid: 1003 }, undefined, me);
  t.deepEqual([fs.lstatSync(l).uid, fs.lstatSync(l).gid, fs.lstatSync(f).uid], [1002, 1003, 1000]);
});

test('a daemon that may not give files away keeps them, and drops setuid/setgid from another user\'s file', async (t) => {
  await requirePrograms('setpriv');
  const dir = tempDir(t);
  fs.chmodSync(dir, 0o777);
  const owners = path.resolve(__dirname, '..', 'src', 'fuse', 'owners.js');
  const script = `
    const fs = require('fs');
    const { daemonIdentity, settleNewEntry } = require(${JSON.stringify(owners)});
    const me = daemonIdentity();
    const dir = ${JSON.stringify(dir)};
    const byPath = (p) => ({ chown: (u, g) => fs.lchownSync(p, u, g), chmod: (m) => fs.chmodSync(p, m), parentMode: () => fs.statSync(dir).mode });
    fs.writeFileSync(dir + '/f', '', { mode: 0o600 });
    settleNewEntry(byPath(dir + '/f'), 'file', { uid: 2000, gid: 2000 }, 0o6755, me);
    fs.writeFileSync(dir + '/own', '', { mode: 0o600 });
    settleNewEntry(byPath(dir + '/own'), 'file', { uid: me.uid, gid: 2000 }, 0o4755, me);
  `;
  await runOk('setpriv', ['--reuid=1000', '--regid=1000', '--clear-groups', '--', process.execPath, '-e', script], { timeoutMs: 20_000 });
  const f = fs.lstatSync(path.join(dir, 'f'));
  t.deepEqual([f.uid, f.gid, mode(path.join(dir, 'f'))], [1000, 1000, '755'], 'kept by the daemon, setuid/setgid dropped');
  // The caller's own uid (only its group could not be given): setuid to itself stays.
  t.is(mode(path.join(dir, 'own')), '4755');
});
