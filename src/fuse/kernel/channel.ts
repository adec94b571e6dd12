/**
 * The channel of darefs's own FUSE transport: the /dev/fuse file descriptor, how it gets mounted
 * and unmounted, and the stream of raw requests read from it. Decoding and answering requests is
 * the protocol's and the server's business; this module only moves bytes.
 *
 * The native half is native/darefs_fuse.c (built at install by scripts/build-native.js): opening
 * /dev/fuse, mount(2), SCM_RIGHTS, and a reader thread. Replies are written here, from the JS
 * thread, one write per reply (the kernel takes a reply only as a single write).
 *
 * Rules learnt the hard way (../shared/PERF-NOTES.md, "Own transport"):
 * - Reading /dev/fuse before mount(2) returned fails with EPERM: start the reader after openMount.
 * - The read buffer must hold max_write + 80 bytes or every read fails with EINVAL.
 * - ENOENT on a reply means the request was interrupted and is gone: not an error.
 * - Never unmount synchronously from the thread that answers the mount: umount(8) and fusermount3
 *   touch the mount point and wait for an answer. closeMount runs fusermount3 as a child and
 *   awaits it; as root it calls umount2(2) directly, which sends no request.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ADDON_PATH } from '../../sys';

/** One reader, as native/darefs_fuse.c's startReader returns it. */
export interface NativeReader {
  /** Stops and joins the thread; no callback runs afterwards. Idempotent. */
  stop(): void;
  /** Keeps the event loop alive while the reader runs (the default). */
  ref(): void;
  unref(): void;
}

/** native/darefs_fuse's exports. Failures throw errors shaped like Node's fs errors. */
export interface FuseAddon {
  /** open("/dev/fuse", O_RDWR|O_CLOEXEC). */
  openDevice(): number;
  /** mount(2); data is the comma-separated option string (at most a page). */
  mount(source: string, target: string, fstype: string, flags: number, data: string): void;
  /** umount2(2); flags: MNT_DETACH for a lazy unmount. */
  umount(target: string, flags: number): void;
  /** An AF_UNIX stream socket pair, both ends close-on-exec. */
  socketpair(): [number, number];
  /** The descriptor in one SCM_RIGHTS message; never blocks (EAGAIN when none is there). */
  recvFd(sock: number): number;
  /**
   * Reads requests from fd on a thread of its own (fd becomes O_NONBLOCK) and calls onBatch on
   * the JS thread with every request read since the last call, one Buffer per request, each
   * valid for as long as it is kept. onEnd(errno) comes once, after the last batch, when reading
   * stops by itself: ENODEV when the file system was unmounted, another errno on a failure.
   */
  startReader(
    fd: number,
    bufferSize: number,
    onBatch: (requests: Buffer[]) => void,
    onEnd: (errno: number) => void,
  ): NativeReader;
}

/** Where scripts/build-native.js puts the addon, beside native/darefs_sys. */
export const FUSE_ADDON_PATH = path.join(path.dirname(ADDON_PATH), 'darefs_fuse.node');

type Loaded = { calls: FuseAddon } | { calls: undefined; reason: string };
let loaded: Loaded | undefined;

/** The addon, or undefined with the reason it is missing (DAREFS_NO_NATIVE=1 pretends it is). */
export function loadFuseAddon(): Loaded {
  if (loaded) return loaded;
  if (process.env['DAREFS_NO_NATIVE']) {
    loaded = { calls: undefined, reason: 'DAREFS_NO_NATIVE is set' };
  } else if (!fs.existsSync(FUSE_ADDON_PATH)) {
    loaded = { calls: undefined, reason: `${FUSE_ADDON_PATH} was not built (run: node scripts/build-native.js)` };
  } else {
    try {
      const mod = { exports: {} as FuseAddon };
      process.dlopen(mod, FUSE_ADDON_PATH);
      loaded = { calls: mod.exports };
    } catch (err) {
      loaded = { calls: undefined, reason: `cannot load ${FUSE_ADDON_PATH}: ${err instanceof Error ? err.message : String(err)}` };
    }
  }
  return loaded;
}

/**
 * Why a mount, an unmount or the channel failed. code: the errno name when a system call said it
 * (EBUSY: the file system is in use), or one of NOADDON (native/darefs_fuse missing),
 * NOFUSERMOUNT (fusermount3 not installed), FUSERMOUNT (fusermount3 refused; its words in the
 * message), BADOPTION (a name that cannot be passed).
 */
export class FuseChannelError extends Error {
  override readonly name: string = 'FuseChannelError';
  constructor(
    readonly code: string,
    readonly mountpoint: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface MountRequest {
  mountpoint: string;
  /** What /proc/mounts shows as the source (e.g. the cipher directory). */
  fsname: string;
  /** The type becomes fuse.<subtype>. */
  subtype: string;
  allowOther: boolean;
  defaultPermissions: boolean;
  readOnly: boolean;
  /** Largest READ the kernel may send, in bytes. */
  maxRead?: number;
}

// <sys/mount.h>
const MS_RDONLY = 1;
const MS_NOSUID = 2;
const MS_NODEV = 4;
const MNT_DETACH = 2;
const S_IFMT = 0o170000;

/** Room for a 1 MiB WRITE (max_pages 256) plus its headers: what the kernel wants from read(). */
export const DEFAULT_BUFFER_SIZE = (1 << 20) + 4096;

/** How long fusermount3 may take before it is killed. */
const FUSERMOUNT_TIMEOUT_MS = 30_000;

function requireAddon(mountpoint: string): FuseAddon {
  const addon = loadFuseAddon();
  if (!addon.calls) throw new FuseChannelError('NOADDON', mountpoint, `cannot mount ${mountpoint}: native/darefs_fuse is not available (${addon.reason})`);
  return addon.calls;
}

function errnoCode(err: unknown): string {
  const code = typeof err === 'object' && err !== null ? (err as NodeJS.ErrnoException).code : undefined;
  return typeof code === 'string' ? code : 'EIO';
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function checkName(what: string, value: string, mountpoint: string): void {
  if (value.includes('\0')) throw new FuseChannelError('BADOPTION', mountpoint, `cannot mount ${mountpoint}: the ${what} contains a NUL byte`);
}

/**
 * Mounts a FUSE file system at req.mountpoint and returns the /dev/fuse descriptor that serves
 * it. As root (euid 0): mount(2) directly; otherwise through the setuid fusermount3 (package
 * fuse3), which opens /dev/fuse, mounts, and passes the descriptor back over a socket.
 *
 * The caller checks the mount point first (src/fuse/mountpoint.ts): this stats it to learn its
 * type, which would hang on a wedged FUSE mount.
 */
export async function openMount(req: MountRequest): Promise<{ fd: number; how: 'mount(2)' | 'fusermount3' }> {
  const mountpoint = path.resolve(req.mountpoint);
  checkName('file system name', req.fsname, mountpoint);
  checkName('subtype', req.subtype, mountpoint);
  if (req.maxRead !== undefined && !(Number.isSafeInteger(req.maxRead) && req.maxRead > 0)) {
    throw new FuseChannelError('BADOPTION', mountpoint, `cannot mount ${mountpoint}: max_read must be a positive integer, not ${req.maxRead}`);
  }
  const addon = requireAddon(mountpoint);
  if (process.geteuid?.() === 0) return { fd: await mountDirect(addon, req, mountpoint), how: 'mount(2)' };
  return { fd: await mountWithFusermount(addon, req, mountpoint), how: 'fusermount3' };
}

async function mountDirect(addon: FuseAddon, req: MountRequest, mountpoint: string): Promise<number> {
  let rootmode: number;
  try {
    rootmode = (await fs.promises.stat(mountpoint)).mode & S_IFMT;
  } catch (err) {
    throw new FuseChannelError(errnoCode(err), mountpoint, `cannot mount ${mountpoint}: ${describe(err)}`, { cause: err });
  }
  const opts = [
    // fd first: the kernel takes the connection from it
    `rootmode=${rootmode.toString(8)}`,
    `user_id=${process.geteuid?.() ?? 0}`,
    `group_id=${process.getegid?.() ?? 0}`,
  ];
  if (req.defaultPermissions) opts.push('default_permissions');
  if (req.allowOther) opts.push('allow_other');
  if (req.maxRead !== undefined) opts.push(`max_read=${req.maxRead}`);
  let fd: number;
  try {
    fd = addon.openDevice();
  } catch (err) {
    throw new FuseChannelError(errnoCode(err), mountpoint, `cannot mount ${mountpoint}: cannot open /dev/fuse: ${describe(err)}`, { cause: err });
  }
  try {
    const flags = MS_NOSUID | MS_NODEV | (req.readOnly ? MS_RDONLY : 0);
    addon.mount(req.fsname, mountpoint, req.subtype ? `fuse.${req.subtype}` : 'fuse', flags, [`fd=${fd}`, ...opts].join(','));
  } catch (err) {
    fs.closeSync(fd);
    throw new FuseChannelError(errnoCode(err), mountpoint, `cannot mount ${mountpoint}: ${describe(err)}`, { cause: err });
  }
  return fd;
}

/** fusermount3 splits -o at commas and unescapes backslashes (for fsname and subtype). */
function escapeOption(value: string): string {
  return value.replace(/[\\,]/g, (c) => `\\${c}`);
}

interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

/**
 * Runs fusermount3 with a minimal environment (nothing of darefs's own environment, which may
 * have held a password, reaches the setuid helper) and the C locale, so that its messages carry
 * strerror's English words, which closeMount recognises.
 */
function runFusermount(args: string[], mountpoint: string, extraFd?: number): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = { PATH: process.env['PATH'] ?? '/usr/bin:/bin', LC_ALL: 'C' };
    if (extraFd !== undefined) env['_FUSE_COMMFD'] = '3';
    const stdio: Array<'ignore' | 'pipe' | number> = ['ignore', 'ignore', 'pipe'];
    if (extraFd !== undefined) stdio.push(extraFd);
    const child = spawn('fusermount3', args, { stdio, env });
    let stderr = '';
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (s: string) => {
      if (stderr.length < 8192) stderr += s;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), FUSERMOUNT_TIMEOUT_MS);
    child.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (err.code === 'ENOENT') {
        reject(new FuseChannelError('NOFUSERMOUNT', mountpoint, `cannot mount ${mountpoint} as a user other than root: fusermount3 not found: install fuse3 (Debian: apt-get install fuse3)`, { cause: err }));
      } else {
        reject(new FuseChannelError('FUSERMOUNT', mountpoint, `cannot run fusermount3 for ${mountpoint}: ${err.message}`, { cause: err }));
      }
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stderr: stderr.trim() });
    });
  });
}

function failure(r: ChildResult): string {
  const how = r.signal ? `was killed (${r.signal})` : `exited with ${String(r.code)}`;
  return r.stderr ? `${r.stderr} (fusermount3 ${how})` : `fusermount3 ${how}`;
}

async function mountWithFusermount(addon: FuseAddon, req: MountRequest, mountpoint: string): Promise<number> {
  const opts = [`fsname=${escapeOption(req.fsname)}`];
  if (req.subtype) opts.push(`subtype=${escapeOption(req.subtype)}`);
  if (req.defaultPermissions) opts.push('default_permissions');
  if (req.allowOther) opts.push('allow_other');
  if (req.readOnly) opts.push('ro');
  if (req.maxRead !== undefined) opts.push(`max_read=${req.maxRead}`);
  const [ours, theirs] = addon.socketpair();
  try {
    let result: ChildResult;
    try {
      result = await runFusermount(['-o', opts.join(','), '--', mountpoint], mountpoint, theirs);
    } finally {
      // Only the child may hold its end, or the receive below could not see the end of the stream.
      fs.closeSync(theirs);
    }
    if (result.code !== 0) throw new FuseChannelError('FUSERMOUNT', mountpoint, `cannot mount ${mountpoint}: ${failure(result)}`);
    try {
      return addon.recvFd(ours);
    } catch (err) {
      throw new FuseChannelError('FUSERMOUNT', mountpoint, `cannot mount ${mountpoint}: fusermount3 succeeded but passed no /dev/fuse descriptor (${describe(err)})`, { cause: err });
    }
  } finally {
    fs.closeSync(ours);
  }
}

/** What fusermount3 -u says, in strerror's words (C locale), to the errno it stands for. */
const UNMOUNT_MESSAGES: Array<[RegExp, string]> = [
  [/Device or resource busy/, 'EBUSY'],
  [/Invalid argument|not found in \/etc\/mtab|not mounted/i, 'EINVAL'],
  [/Operation not permitted|Permission denied/, 'EPERM'],
  [/No such file or directory/, 'ENOENT'],
];

/**
 * Unmounts a FUSE file system: umount2(2) as root, `fusermount3 -u` otherwise. lazy: detach now
 * even while in use (the connection then ends when the last user lets go). A file system in use
 * gives a FuseChannelError with code 'EBUSY'; not mounted: 'EINVAL'.
 */
export async function closeMount(mountpoint: string, opts: { lazy: boolean }): Promise<void> {
  const target = path.resolve(mountpoint);
  if (process.geteuid?.() === 0) {
    const addon = requireAddon(target);
    try {
      addon.umount(target, opts.lazy ? MNT_DETACH : 0);
    } catch (err) {
      throw new FuseChannelError(errnoCode(err), target, `cannot unmount ${target}: ${describe(err)}`, { cause: err });
    }
    return;
  }
  const result = await runFusermount(['-u', ...(opts.lazy ? ['-z'] : []), '--', target], target);
  if (result.code === 0) return;
  const code = UNMOUNT_MESSAGES.find(([re]) => re.test(result.stderr))?.[1] ?? 'FUSERMOUNT';
  throw new FuseChannelError(code, target, `cannot unmount ${target}: ${failure(result)}`);
}

function errnoNumber(code: string): number {
  const n = (os.constants.errno as Record<string, number>)[code];
  return typeof n === 'number' ? n : os.constants.errno.EIO;
}

/**
 * One /dev/fuse connection: requests in (batches from the reader thread), replies out (one write
 * each, from the JS thread).
 */
export class Channel {
  private reader: NativeReader | undefined;
  private refed = true;
  private closed = false;
  private readonly addon: FuseAddon;

  constructor(readonly fd: number) {
    const addon = loadFuseAddon();
    if (!addon.calls) throw new FuseChannelError('NOADDON', '', `native/darefs_fuse is not available (${addon.reason})`);
    this.addon = addon.calls;
  }

  /**
   * Starts reading (only after the mount call returned). onBatch gets every request read since
   * its last call; onEnd(errno) comes once when reading stops by itself: ENODEV (19) after an
   * unmount, anything else is a failure. Neither is called after close().
   */
  start(onBatch: (requests: Buffer[]) => void, onEnd: (errno: number) => void, bufferSize: number = DEFAULT_BUFFER_SIZE): void {
    if (this.closed) throw new Error('Channel.start: the channel is closed');
    if (this.reader) throw new Error('Channel.start: already started');
    this.reader = this.addon.startReader(this.fd, bufferSize, onBatch, onEnd);
    if (!this.refed) this.reader.unref();
  }

  /**
   * Writes one reply (the buffers back to back) with one system call. Returns 0, or -errno;
   * ENOENT (the request was interrupted and is gone) counts as 0.
   */
  write(buffers: Buffer[]): number {
    let total = 0;
    for (const b of buffers) total += b.length;
    let written: number;
    try {
      written = buffers.length === 1 ? fs.writeSync(this.fd, buffers[0]!) : fs.writevSync(this.fd, buffers);
    } catch (err) {
      const code = errnoCode(err);
      return code === 'ENOENT' ? 0 : -errnoNumber(code);
    }
    // /dev/fuse takes a reply whole or not at all; anything else is not the device we think
    return written === total ? 0 : -os.constants.errno.EIO;
  }

  /** The reader keeps the event loop alive (the default). */
  ref(): void {
    this.refed = true;
    this.reader?.ref();
  }

  unref(): void {
    this.refed = false;
    this.reader?.unref();
  }

  /**
   * Stops the reader (no callback after this) and closes the descriptor. Closing it while still
   * mounted aborts the connection: the mount then answers ENOTCONN until it is unmounted.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.reader?.stop();
    fs.closeSync(this.fd);
  }
}

/** Why the own transport cannot run here (undefined when it can): no addon. */
export function kernelTransportMissing(): string | undefined {
  const addon = loadFuseAddon();
  return addon.calls ? undefined : addon.reason;
}
