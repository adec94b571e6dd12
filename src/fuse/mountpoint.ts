/**
 * Mount-point lifecycle helpers: is it mounted, is it stale, can we mount here, unmount it, who
 * keeps it busy. Meant for the CLI / parent process and the daemon's own unmount.
 *
 * Rule followed throughout: never touch a path that may be a FUSE mount with a call that could
 * block this process. A FUSE mount can hang (daemon stopped or wedged), and a hung lstat in the
 * libuv pool never returns, taking a pool thread with it. So anything that stats a possibly-mounted
 * path runs in a child process (`stat`) with a deadline and SIGKILL (FUSE waits are killable).
 * /proc/self/mountinfo and /proc/PID/{cwd,root,fd} readlinks never call into the filesystem.
 */
import { execFile } from 'node:child_process';
import { constants as fsConstants, promises as fsp } from 'node:fs';
import * as path from 'node:path';

export type MountpointErrorCode =
  | 'ENOENT' // mount point does not exist
  | 'NOTDIR' // mount point is not a directory
  | 'NOTEMPTY' // mount point has entries
  | 'MOUNTED' // something live is mounted there
  | 'STALE' // a dead FUSE mount we will not clean automatically
  | 'HUNG' // a FUSE mount that does not answer within the deadline
  | 'BUSY' // unmount refused: files/cwds in use (see MountBusyError.holders)
  | 'NOTMOUNTED' // unmount asked for a path that is not a mount point
  | 'TIMEOUT' // an unmount command did not finish in time
  | 'FAILED'; // any other failure (message has the command's stderr)

export class MountpointError extends Error {
  override readonly name: string = 'MountpointError';
  constructor(
    readonly code: MountpointErrorCode,
    readonly path: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface MountHolder {
  pid: number;
  comm: string;
  /** How it holds the mount: 'cwd', 'root', 'exe', 'fd 3', 'mmap'. */
  uses: string[];
}

export class MountBusyError extends MountpointError {
  override readonly name: string = 'MountBusyError';
  constructor(
    mountpoint: string,
    readonly holders: MountHolder[],
    detail: string,
  ) {
    super('BUSY', mountpoint, busyMessage(mountpoint, holders, detail));
  }
}

export interface MountEntry {
  id: number;
  parentId: number;
  major: number;
  minor: number;
  /** Root of the mount within its filesystem. */
  root: string;
  mountPoint: string;
  options: string;
  /** e.g. 'fuse.darefs', 'ext4'. */
  fsType: string;
  source: string;
  superOptions: string;
}

// ---------------------------------------------------------------------------------------------
// mountinfo

/**
 * The kernel escapes space, tab, newline and backslash in mountinfo as \ooo octal. Paths are raw
 * bytes otherwise, so decode via latin1 to keep byte identity, then reinterpret as UTF-8.
 */
export function unescapeMountField(field: string): string {
  const bytes = field.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
  return Buffer.from(bytes, 'latin1').toString('utf8');
}

export function parseMountInfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const fields = line.split(' ');
    const sep = fields.indexOf('-', 6);
    if (sep < 0 || fields.length < sep + 3) continue;
    const [major, minor] = fields[2]!.split(':').map((n) => Number(n));
    entries.push({
      id: Number(fields[0]),
      parentId: Number(fields[1]),
      major: major ?? 0,
      minor: minor ?? 0,
      root: unescapeMountField(fields[3]!),
      mountPoint: unescapeMountField(fields[4]!),
      options: fields[5]!,
      fsType: unescapeMountField(fields[sep + 1]!),
      source: unescapeMountField(fields[sep + 2]!),
      superOptions: fields[sep + 3] ?? '',
    });
  }
  return entries;
}

export async function readMountInfo(): Promise<MountEntry[]> {
  // latin1 so that unescapeMountField can rebuild the exact bytes of non-ASCII paths.
  return parseMountInfo(await fsp.readFile('/proc/self/mountinfo', 'latin1'));
}

/**
 * Absolute, symlink-free form of a mount point without stat-ing the mount point itself (it may
 * be a hung mount): realpath of the parent, plus the base name.
 */
export async function canonicalMountpoint(p: string): Promise<string> {
  const abs = path.resolve(p);
  if (abs === '/') return abs;
  const parent = path.dirname(abs);
  let realParent = parent;
  try {
    realParent = await fsp.realpath(parent);
  } catch {
    // A missing parent is reported by whoever stats the mount point; keep the lexical path.
  }
  return path.join(realParent, path.basename(abs));
}

/** The topmost mount exactly at `p` (later mountinfo lines are stacked on earlier ones). */
export async function findMount(p: string, entries?: MountEntry[]): Promise<MountEntry | undefined> {
  const target = await canonicalMountpoint(p);
  const all = entries ?? (await readMountInfo());
  let found: MountEntry | undefined;
  for (const e of all) if (e.mountPoint === target) found = e;
  return found;
}

export async function isMounted(p: string): Promise<boolean> {
  return (await findMount(p)) !== undefined;
}

/** Every mount at or below `dir` (for leftover checks). */
export async function mountsUnder(dir: string): Promise<MountEntry[]> {
  const root = await canonicalMountpoint(dir);
  const prefix = root.endsWith('/') ? root : root + '/';
  return (await readMountInfo()).filter((e) => e.mountPoint === root || e.mountPoint.startsWith(prefix));
}

// ---------------------------------------------------------------------------------------------
// probing with a deadline

export type ProbeResult =
  | { state: 'ok'; dev: number; type: string }
  | { state: 'stale' } // ENOTCONN: the FUSE daemon is gone
  | { state: 'hung' } // no answer before the deadline
  | { state: 'error'; code: string; message: string };

const STRERROR_TO_CODE: ReadonlyArray<[RegExp, string]> = [
  [/Transport endpoint is not connected/, 'ENOTCONN'],
  [/No such file or directory/, 'ENOENT'],
  [/Not a directory/, 'ENOTDIR'],
  [/Permission denied/, 'EACCES'],
  [/Input\/output error/, 'EIO'],
  [/Software caused connection abort/, 'ECONNABORTED'],
];

/**
 * Probe `p` in child `stat` processes with a deadline, so a hung FUSE mount costs at most
 * `timeoutMs` and no thread of ours. statfs first: unlike lstat, which the kernel answers from
 * its attribute cache for attr_timeout even after the daemon died, FUSE never caches statfs, so
 * it is a real round trip to the daemon (ENOTCONN when it is gone). Then lstat for the type.
 */
export async function probePath(p: string, timeoutMs = 5000): Promise<ProbeResult> {
  const deadline = Date.now() + timeoutMs;
  const fsRes = await statChild(['-f', '-c', '%t', '--', p], timeoutMs);
  if (fsRes.state !== 'ok') return fsRes;
  const res = await statChild(['-c', '%d %F', '--', p], Math.max(1, deadline - Date.now()));
  if (res.state !== 'ok') return res;
  const m = /^(\d+) (.*)$/m.exec(res.stdout);
  return { state: 'ok', dev: Number(m?.[1] ?? 0), type: m?.[2] ?? '' };
}

function statChild(args: string[], timeoutMs: number): Promise<Exclude<ProbeResult, { state: 'ok' }> | { state: 'ok'; stdout: string }> {
  return new Promise((resolve) => {
    execFile('stat', args, { timeout: timeoutMs, killSignal: 'SIGKILL', env: { ...process.env, LC_ALL: 'C' } }, (err, stdout, stderr) => {
      if (!err) {
        resolve({ state: 'ok', stdout: String(stdout) });
        return;
      }
      if ((err as NodeJS.ErrnoException & { killed?: boolean }).killed) {
        resolve({ state: 'hung' });
        return;
      }
      const text = String(stderr);
      const code = STRERROR_TO_CODE.find(([re]) => re.test(text))?.[1] ?? 'EUNKNOWN';
      if (code === 'ENOTCONN' || code === 'ECONNABORTED') resolve({ state: 'stale' });
      else resolve({ state: 'error', code, message: text.trim() || err.message });
    });
  });
}

/** True when `p` is a mount point whose FUSE daemon is gone (stat fails with ENOTCONN). */
export async function isStale(p: string, timeoutMs = 5000): Promise<boolean> {
  const entry = await findMount(p);
  if (!entry || !entry.fsType.startsWith('fuse')) return false;
  return (await probePath(entry.mountPoint, timeoutMs)).state === 'stale';
}

// ---------------------------------------------------------------------------------------------
// unmount

const pathLookups = new Map<string, Promise<string | undefined>>();

/** Absolute path of an executable on PATH, or undefined. */
export function whichExecutable(name: string): Promise<string | undefined> {
  let found = pathLookups.get(name);
  if (!found) {
    found = (async () => {
      for (const dir of (process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
        if (!dir) continue;
        const candidate = path.join(dir, name);
        try {
          await fsp.access(candidate, fsConstants.X_OK);
          return candidate;
        } catch {
          // not here
        }
      }
      return undefined;
    })();
    pathLookups.set(name, found);
  }
  return found;
}

interface CommandResult {
  ok: boolean;
  timedOut: boolean;
  output: string;
}

function runCommand(file: string, args: string[], timeoutMs: number): Promise<CommandResult> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      { timeout: timeoutMs, killSignal: 'SIGKILL', env: { ...process.env, LC_ALL: 'C' } },
      (err, stdout, stderr) => {
        const output = `${String(stdout)}${String(stderr)}`.trim();
        if (!err) resolve({ ok: true, timedOut: false, output });
        else
          resolve({
            ok: false,
            timedOut: Boolean((err as NodeJS.ErrnoException & { killed?: boolean }).killed),
            output: output || err.message,
          });
      },
    );
  });
}

/**
 * Unmount commands to try, in order. fusermount3/fusermount work for non-root users too and are
 * preferred when installed; `umount` (root only) is the fallback since fuse-native 2.2.6 /
 * libfuse 2.9 as root mount with mount(2) and this machine has no fusermount.
 */
async function unmountCommands(fsType: string, lazy: boolean): Promise<Array<[string, string[]]>> {
  const cmds: Array<[string, string[]]> = [];
  if (fsType.startsWith('fuse')) {
    for (const name of ['fusermount3', 'fusermount']) {
      const bin = await whichExecutable(name);
      if (bin) cmds.push([bin, lazy ? ['-u', '-z'] : ['-u']]);
    }
  }
  const umount = (await whichExecutable('umount')) ?? '/bin/umount';
  cmds.push([umount, lazy ? ['-l'] : []]);
  return cmds;
}

export interface UnmountOptions {
  /** Detach now, finish when the last user goes away (MNT_DETACH). */
  lazy?: boolean;
  /** Per-command deadline (ms). */
  timeoutMs?: number;
  /** Only unmount if the topmost mount at the path has this mountinfo ID (our own mount). */
  mountId?: number;
}

/**
 * Unmount whatever is mounted at `p`. Throws MountpointError: NOTMOUNTED, BUSY (MountBusyError,
 * naming the processes that hold it), TIMEOUT or FAILED.
 */
export async function unmountPath(p: string, opts: UnmountOptions = {}): Promise<void> {
  const mnt = await canonicalMountpoint(p);
  const entry = await findMount(mnt);
  if (!entry) throw new MountpointError('NOTMOUNTED', mnt, `${q(mnt)} is not a mount point`);
  if (opts.mountId !== undefined && entry.id !== opts.mountId) {
    if (!(await mountIdPresent(opts.mountId, mnt))) {
      throw new MountpointError('NOTMOUNTED', mnt, `${q(mnt)}: mount ${opts.mountId} is already gone`);
    }
    throw new MountpointError('FAILED', mnt, `${q(mnt)}: another filesystem (${entry.fsType}) is mounted on top of ours`);
  }
  const lazy = opts.lazy ?? false;
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const failures: string[] = [];
  for (const [bin, flags] of await unmountCommands(entry.fsType, lazy)) {
    const res = await runCommand(bin, [...flags, mnt], timeoutMs);
    if (res.ok || !(await mountIdPresent(entry.id, mnt))) return;
    if (res.timedOut) {
      throw new MountpointError(
        'TIMEOUT',
        mnt,
        `unmounting ${q(mnt)} with ${path.basename(bin)} did not finish within ${timeoutMs / 1000} s; ` +
          `the filesystem may be hung: try \`umount -l ${q(mnt)}\``,
      );
    }
    if (/busy/i.test(res.output)) {
      throw new MountBusyError(mnt, await findHolders(mnt), res.output);
    }
    failures.push(`${path.basename(bin)}: ${res.output}`);
  }
  throw new MountpointError('FAILED', mnt, `could not unmount ${q(mnt)}: ${failures.join('; ')}`);
}

/** Mount IDs are reused once freed: match the mount point too. */
async function mountIdPresent(id: number, mnt: string): Promise<boolean> {
  return (await readMountInfo()).some((e) => e.id === id && e.mountPoint === mnt);
}

/**
 * Unmount a stale FUSE mount at `p` (daemon gone: ENOTCONN). Returns false when nothing is
 * mounted there. Throws MOUNTED if the mount is alive, HUNG if it does not answer.
 */
export async function cleanStaleMount(p: string, probeTimeoutMs = 5000): Promise<boolean> {
  const mnt = await canonicalMountpoint(p);
  const entry = await findMount(mnt);
  if (!entry) return false;
  if (!entry.fsType.startsWith('fuse')) {
    throw new MountpointError('MOUNTED', mnt, `${q(mnt)} is a ${entry.fsType} mount, not a stale FUSE mount`);
  }
  const probe = await probePath(mnt, probeTimeoutMs);
  if (probe.state === 'hung') throw hungError(mnt, probeTimeoutMs);
  if (probe.state !== 'stale') {
    throw new MountpointError('MOUNTED', mnt, `${q(mnt)} is a live mount (${entry.fsType}), not stale`);
  }
  try {
    await unmountPath(mnt);
  } catch (err) {
    // A dead connection can still be pinned by a process's cwd or open fd: detach it lazily, the
    // holders only ever see ENOTCONN anyway.
    if (!(err instanceof MountpointError)) throw err;
    if (err.code === 'NOTMOUNTED') return true;
    await unmountPath(mnt, { lazy: true });
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// checks before mounting

export interface CheckMountpointOptions {
  /** FUSE subtype whose stale mounts we clean automatically ('darefs' → fuse.darefs). */
  subtype?: string;
  probeTimeoutMs?: number;
}

/**
 * Refuse a mount point that does not exist, is not a directory, is not empty, or is already a
 * live mount; clean a stale mount of our own subtype. Returns the canonical mount point path.
 */
export async function checkMountpoint(p: string, opts: CheckMountpointOptions = {}): Promise<string> {
  const mnt = await canonicalMountpoint(p);
  const subtype = opts.subtype ?? 'darefs';
  const timeoutMs = opts.probeTimeoutMs ?? 5000;
  const entry = await findMount(mnt);
  if (entry) {
    const probe = entry.fsType.startsWith('fuse') ? await probePath(mnt, timeoutMs) : undefined;
    if (probe?.state === 'stale') {
      if (entry.fsType !== `fuse.${subtype}`) {
        throw new MountpointError(
          'STALE',
          mnt,
          `${q(mnt)} is a stale ${entry.fsType} mount (Transport endpoint is not connected): ` +
            `run \`umount -l ${q(mnt)}\` first`,
        );
      }
      await cleanStaleMount(mnt, timeoutMs);
    } else if (probe?.state === 'hung') {
      throw hungError(mnt, timeoutMs);
    } else {
      const how = entry.fsType === `fuse.${subtype}` ? `${subtype} umount ${q(mnt)}` : `umount ${q(mnt)}`;
      throw new MountpointError(
        'MOUNTED',
        mnt,
        `${q(mnt)} is already a mount point (${entry.fsType}): run \`${how}\` first`,
      );
    }
  }
  const probe = await probePath(mnt, timeoutMs);
  if (probe.state === 'hung') throw hungError(mnt, timeoutMs);
  if (probe.state === 'stale') {
    throw new MountpointError('STALE', mnt, `${q(mnt)} is not connected (stale mount): run \`umount -l ${q(mnt)}\``);
  }
  if (probe.state === 'error') {
    if (probe.code === 'ENOENT') {
      throw new MountpointError('ENOENT', mnt, `mount point ${q(mnt)} does not exist: create it with \`mkdir -p ${q(mnt)}\``);
    }
    if (probe.code === 'ENOTDIR') {
      throw new MountpointError('NOTDIR', mnt, `mount point ${q(mnt)} is not a directory (a path component is a file)`);
    }
    throw new MountpointError('FAILED', mnt, `cannot use mount point ${q(mnt)}: ${probe.message}`);
  }
  if (probe.type !== 'directory') {
    throw new MountpointError('NOTDIR', mnt, `mount point ${q(mnt)} is not a directory (it is a ${probe.type})`);
  }
  // Not a mount point and it answered stat: a plain local directory, safe to read in-process.
  const dir = await fsp.opendir(mnt);
  try {
    if ((await dir.read()) !== null) {
      throw new MountpointError(
        'NOTEMPTY',
        mnt,
        `mount point ${q(mnt)} is not empty: mounting would hide its contents; use an empty directory`,
      );
    }
  } finally {
    await dir.close().catch(() => undefined);
  }
  return mnt;
}

function hungError(mnt: string, timeoutMs: number): MountpointError {
  return new MountpointError(
    'HUNG',
    mnt,
    `${q(mnt)} does not answer within ${timeoutMs / 1000} s (is its daemon stopped or stuck?): ` +
      `run \`umount -l ${q(mnt)}\` to detach it`,
  );
}

// ---------------------------------------------------------------------------------------------
// holders

/**
 * Processes whose cwd, root, exe, open fds or mapped files lie on the mount at `mnt`. Only
 * readlink/read of /proc, which never calls into the (possibly hung) filesystem.
 */
export async function findHolders(mnt: string): Promise<MountHolder[]> {
  const prefix = mnt.endsWith('/') ? mnt : mnt + '/';
  const under = (target: string): boolean => target === mnt || target.startsWith(prefix);
  const pids = (await fsp.readdir('/proc')).filter((n) => /^\d+$/.test(n));
  const holders: MountHolder[] = [];
  await Promise.all(
    pids.map(async (pid) => {
      const base = `/proc/${pid}`;
      const uses: string[] = [];
      for (const link of ['cwd', 'root', 'exe']) {
        const target = await fsp.readlink(`${base}/${link}`).catch(() => undefined);
        if (target !== undefined && under(target) && !(link === 'root' && mnt === '/')) uses.push(link);
      }
      const fds = await fsp.readdir(`${base}/fd`).catch(() => [] as string[]);
      for (const fd of fds) {
        const target = await fsp.readlink(`${base}/fd/${fd}`).catch(() => undefined);
        if (target !== undefined && under(target)) uses.push(`fd ${fd}`);
      }
      const maps = await fsp.readFile(`${base}/maps`, 'utf8').catch(() => '');
      if (maps && maps.includes(mnt)) {
        for (const line of maps.split('\n')) {
          const file = line.split(/\s+/).slice(5).join(' ');
          if (file && under(file)) {
            uses.push('mmap');
            break;
          }
        }
      }
      if (uses.length === 0) return;
      const comm = (await fsp.readFile(`${base}/comm`, 'utf8').catch(() => '?')).trim();
      holders.push({ pid: Number(pid), comm, uses });
    }),
  );
  return holders.sort((a, b) => a.pid - b.pid);
}

export function formatHolders(holders: MountHolder[]): string {
  return holders.map((h) => `pid ${h.pid} (${h.comm}) [${h.uses.join(', ')}]`).join(', ');
}

function busyMessage(mnt: string, holders: MountHolder[], detail: string): string {
  const who = holders.length
    ? `held by ${formatHolders(holders)}`
    : `no holder found in /proc (${detail.split('\n')[0] ?? 'busy'})`;
  return `${q(mnt)} is busy: ${who}. Close those, or detach it lazily with \`umount -l ${q(mnt)}\``;
}

/** Quote a path for a message the user may paste into a shell. */
function q(p: string): string {
  return /^[\w@%+=:,./-]+$/.test(p) ? p : `'${p.replace(/'/g, `'\\''`)}'`;
}
