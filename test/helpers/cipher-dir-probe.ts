/**
 * Child process of test/store-cipher-dir.test.ts: tries every way out of a CipherDir and prints
 * what each attempt came to, as JSON on stdout. A child because the addon is loaded once per
 * process (the DAREFS_NO_NATIVE=1 run needs its own) and because an open that blocks (a FIFO)
 * must hang a process the test can kill, not the ava worker.
 *
 *   node cipher-dir-probe.js ROOT OUTSIDE
 *
 * ROOT and OUTSIDE are laid out by the test (see there).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CipherDir, NotRegularFileError, UnsafePathError } from '../../src/store';
import { loadSysCalls, O_PATH } from '../../src/sys';

const { O_RDONLY, O_WRONLY, O_RDWR, O_DIRECTORY } = fs.constants;

export interface ProbeReport {
  /** The addon is loaded (so CipherDir resolves with openat2). */
  native: boolean;
  /** openat2 answers on this kernel (not ENOSYS). */
  openat2: boolean;
  /** Attempt name → 'UnsafePathError' | 'NotRegularFileError' | an errno code | 'ok...' */
  results: Record<string, string>;
  /** What was outside after all attempts: the secret's content and mode, the outside listing. */
  outside: { secret: string; mode: string; names: string[] };
  /** Whether a callback given to at() ran for a path that should have been refused. */
  calledBack: string[];
}

function outcome(fn: () => string): string {
  try {
    return fn();
  } catch (err) {
    if (err instanceof UnsafePathError) return 'UnsafePathError';
    if (err instanceof NotRegularFileError) return 'NotRegularFileError';
    const code = (err as NodeJS.ErrnoException).code;
    return code ?? `thrown: ${err instanceof Error ? err.message : String(err)}`;
  }
}

/** Opens, reads what is there (a regular file's first bytes), closes. */
function readVia(open: () => number): string {
  const fd = open();
  try {
    const buf = Buffer.alloc(64);
    const n = fs.readSync(fd, buf, 0, buf.length, 0);
    return `ok:${buf.subarray(0, n).toString('utf8')}`;
  } finally {
    fs.closeSync(fd);
  }
}

function main(root: string, outside: string): ProbeReport {
  const dir = CipherDir.open(root);
  const sys = loadSysCalls().calls;
  let openat2 = false;
  if (sys) {
    try {
      fs.closeSync(sys.openat2(dir.fd, '.', O_PATH, 0, 0));
      openat2 = true;
    } catch {
      openat2 = false;
    }
  }
  const secret = path.join(outside, 'secret');
  const results: Record<string, string> = {};
  const calledBack: string[] = [];
  const open = (name: string, p: string, flags = O_RDONLY): void => {
    results[`open ${name}`] = outcome(() => readVia(() => dir.open(p, flags)));
  };
  const openFile = (name: string, p: string, flags = O_RDONLY): void => {
    results[`openFile ${name}`] = outcome(() => readVia(() => dir.openFile(p, flags)));
  };

  // What is allowed: plain names beneath the root, relative or absolute.
  open('file', 'file');
  open('sub/file', 'sub/file');
  open('absolute inside', path.join(dir.root, 'sub', 'file'));
  openFile('file', 'file');
  openFile('file rdwr', 'file', O_RDWR);
  results['readdir sub'] = outcome(() => `ok:${dir.readdir('sub').join(',')}`);
  results['lstat link-out'] = outcome(() => `ok:${dir.lstat('link-out').isSymbolicLink() ? 'symlink' : 'not a symlink'}`);

  // '..' anywhere, absolute paths elsewhere (also one that shares the root's name as a prefix).
  open('../outside/secret', `../${path.basename(outside)}/secret`);
  open('sub/../../outside/secret', `sub/../../${path.basename(outside)}/secret`);
  open('sub/../file', 'sub/../file');
  open('./file', './file');
  open('absolute outside', secret);
  open('absolute with ..', `${dir.root}/sub/../../${path.basename(outside)}/secret`);
  open('root name as prefix', `${dir.root}-evil/secret`);
  open('empty component', 'sub//file');

  // A symlink as a component: out of the root, or even to a place inside it.
  open('link-out-dir/secret', 'link-out-dir/secret');
  openFile('link-out-dir/secret', 'link-out-dir/secret');
  open('link-in-dir/file', 'link-in-dir/file');
  open('sub/link-up/secret', 'sub/link-up/secret');
  results['readdir link-out-dir'] = outcome(() => `ok:${dir.readdir('link-out-dir').join(',')}`);
  results['lstat link-out-dir/secret'] = outcome(() => `ok:${dir.lstat('link-out-dir/secret').mode.toString(8)}`);
  results['at link-out-dir/secret'] = outcome(() =>
    dir.at('link-out-dir/secret', (e) => {
      calledBack.push('at link-out-dir/secret');
      return `ok:${e}`;
    }),
  );
  results['at2 into link-out-dir'] = outcome(() =>
    dir.at2('file', 'link-out-dir/planted', (a, b) => {
      calledBack.push('at2 into link-out-dir');
      fs.linkSync(a, b);
      return 'ok';
    }),
  );
  results['chmod link-out-dir/secret'] = outcome(() => {
    dir.chmod('link-out-dir/secret', 0o4777);
    return 'ok';
  });
  results['mkdir in link-out-dir'] = outcome(() => {
    dir.at('link-out-dir/newdir', (e) => fs.mkdirSync(e));
    return 'ok';
  });

  // A symlink as the last component: never followed.
  open('link-out', 'link-out');
  open('link-in', 'link-in');
  open('link-out-dir as directory', 'link-out-dir', O_RDONLY | O_DIRECTORY);
  openFile('link-out', 'link-out');
  openFile('link-out rdwr', 'link-out', O_RDWR);
  openFile('link-in', 'link-in');
  results['chmod link-out'] = outcome(() => {
    dir.chmod('link-out', 0o4777);
    return 'ok';
  });
  results['inode link-out'] = outcome(() => dir.inode('link-out', (_i, st) => `ok:${st.isSymbolicLink() ? 'symlink' : 'followed'}`));

  // Not a regular file where a cipher file should be: refused, never blocking.
  openFile('fifo', 'fifo');
  openFile('fifo wronly', 'fifo', O_WRONLY);
  openFile('fifo rdwr', 'fifo', O_RDWR);
  openFile('sock', 'sock');
  openFile('sock rdwr', 'sock', O_RDWR);
  openFile('sub', 'sub');
  openFile('sub rdwr', 'sub', O_RDWR);
  openFile('chr', 'chr', O_RDWR);

  dir.close();
  const st = fs.statSync(secret);
  return {
    native: sys !== undefined,
    openat2,
    results,
    outside: { secret: fs.readFileSync(secret, 'utf8'), mode: (st.mode & 0o7777).toString(8), names: fs.readdirSync(outside).sort() },
    calledBack,
  };
}

if (require.main === module) {
  const [root, outside] = process.argv.slice(2);
  if (!root || !outside) {
    process.stderr.write('usage: cipher-dir-probe ROOT OUTSIDE\n');
    process.exit(2);
  }
  process.stdout.write(JSON.stringify(main(root, outside)));
}
