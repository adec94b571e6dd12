/**
 * CipherDir, the only way darefs reaches the cipher directory (FORMAT.md §6: it is hostile):
 * no '..', no absolute path elsewhere, no symlink anywhere on the way or as the last component,
 * and a cipher file is a regular file or nothing (a FIFO, socket, device or directory in its
 * place is refused without being opened, so without blocking). Checked with the addon (openat2)
 * and without it (DAREFS_NO_NATIVE=1: the O_NOFOLLOW walk through /proc/self/fd), each in a
 * child process: the addon is loaded once per process, and an open that blocks must hang a
 * process the test can kill, not the ava worker.
 */
import test from 'ava';
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ProbeReport } from './helpers/cipher-dir-probe';
import { tempDir } from './helpers/store';

const PROBE = path.join(__dirname, 'helpers', 'cipher-dir-probe.js');
const SECRET = 'outside secret, root only\n';

/**
 * ROOT: file, sub/file, sub/link-up -> ../../outside, link-out -> OUTSIDE/secret (absolute),
 * link-out-dir -> OUTSIDE, link-in -> file, link-in-dir -> sub, fifo, sock, chr (1:3, as
 * /dev/null). OUTSIDE: secret (0600).
 */
function layout(base: string): { root: string; outside: string } {
  const root = path.join(base, 'root');
  const outside = path.join(base, 'outside');
  fs.mkdirSync(path.join(root, 'sub'), { recursive: true });
  fs.mkdirSync(outside);
  fs.writeFileSync(path.join(outside, 'secret'), SECRET, { mode: 0o600 });
  fs.chmodSync(path.join(outside, 'secret'), 0o600);
  fs.writeFileSync(path.join(root, 'file'), 'inside');
  fs.writeFileSync(path.join(root, 'sub', 'file'), 'sub file');
  fs.symlinkSync(path.join('..', '..', 'outside'), path.join(root, 'sub', 'link-up'));
  fs.symlinkSync(path.join(outside, 'secret'), path.join(root, 'link-out'));
  fs.symlinkSync(outside, path.join(root, 'link-out-dir'));
  fs.symlinkSync('file', path.join(root, 'link-in'));
  fs.symlinkSync('sub', path.join(root, 'link-in-dir'));
  execFileSync('mkfifo', [path.join(root, 'fifo')]);
  // A socket file stays after the socket that bound it is gone.
  execFileSync('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', path.join(root, 'sock')]);
  execFileSync('mknod', [path.join(root, 'chr'), 'c', '1', '3']);
  return { root, outside };
}

function probe(root: string, outside: string, env: NodeJS.ProcessEnv): Promise<ProbeReport> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [PROBE, root, outside], { env, timeout: 20_000, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`probe failed or hung (${err.message}):\n${String(stderr)}`));
      else resolve(JSON.parse(String(stdout)) as ProbeReport);
    });
  });
}

const EXPECTED: Record<string, string> = {
  'open file': 'ok:inside',
  'open sub/file': 'ok:sub file',
  'open absolute inside': 'ok:sub file',
  'openFile file': 'ok:inside',
  'openFile file rdwr': 'ok:inside',
  'readdir sub': 'ok:file,link-up',
  'lstat link-out': 'ok:symlink',

  'open ../outside/secret': 'UnsafePathError',
  'open sub/../../outside/secret': 'UnsafePathError',
  'open sub/../file': 'UnsafePathError',
  'open ./file': 'UnsafePathError',
  'open absolute outside': 'UnsafePathError',
  'open absolute with ..': 'UnsafePathError',
  'open root name as prefix': 'UnsafePathError',
  'open empty component': 'UnsafePathError',

  'open link-out-dir/secret': 'UnsafePathError',
  'openFile link-out-dir/secret': 'UnsafePathError',
  'open link-in-dir/file': 'UnsafePathError',
  'open sub/link-up/secret': 'UnsafePathError',
  'readdir link-out-dir': 'UnsafePathError',
  'lstat link-out-dir/secret': 'UnsafePathError',
  'at link-out-dir/secret': 'UnsafePathError',
  'at2 into link-out-dir': 'UnsafePathError',
  'chmod link-out-dir/secret': 'UnsafePathError',
  'mkdir in link-out-dir': 'UnsafePathError',

  'open link-out': 'UnsafePathError',
  'open link-in': 'UnsafePathError',
  'open link-out-dir as directory': 'UnsafePathError',
  'openFile link-out': 'UnsafePathError',
  'openFile link-out rdwr': 'UnsafePathError',
  'openFile link-in': 'UnsafePathError',
  // As fchmodat(AT_SYMLINK_NOFOLLOW): the symlink itself has no mode to change.
  'chmod link-out': 'EOPNOTSUPP',
  'inode link-out': 'ok:symlink',

  'openFile fifo': 'NotRegularFileError',
  'openFile fifo wronly': 'NotRegularFileError',
  'openFile fifo rdwr': 'NotRegularFileError',
  'openFile sock': 'NotRegularFileError',
  'openFile sock rdwr': 'NotRegularFileError',
  'openFile sub': 'NotRegularFileError',
  'openFile sub rdwr': 'NotRegularFileError',
  'openFile chr': 'NotRegularFileError',
};

for (const native of [true, false]) {
  test(`CipherDir ${native ? 'with openat2 (the addon)' : 'without the addon (O_NOFOLLOW walk)'}: no way out, no symlink followed, only regular files opened`, async (t) => {
    t.timeout(60_000);
    const { root, outside } = layout(tempDir(t, 'cipher-dir'));
    const env: NodeJS.ProcessEnv = { ...process.env };
    if (native) delete env['DAREFS_NO_NATIVE'];
    else env['DAREFS_NO_NATIVE'] = '1';
    const report = await probe(root, outside, env);
    t.is(report.native, native, 'the run uses the path it is named for');
    if (native) t.true(report.openat2, 'openat2 answers on this kernel: the run exercises it, not the walk');
    t.deepEqual(report.results, EXPECTED);
    t.deepEqual(report.calledBack, [], 'no callback ran for a refused path');
    t.deepEqual(report.outside, { secret: SECRET, mode: '600', names: ['secret'] }, 'nothing outside changed');
  });
}
