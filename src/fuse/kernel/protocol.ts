/**
 * The FUSE kernel protocol as bytes: requests read from /dev/fuse decoded into plain objects,
 * replies and notifications encoded into the buffers the kernel expects. Pure: no I/O, no state
 * beyond what the caller passes (the negotiated minor, whether SETXATTR_EXT was granted).
 *
 * Layouts follow linux/fuse.h (7.38, Debian 12's copy) and, for the INIT fields after it, the
 * kernel's include/uapi/linux/fuse.h. We speak at most 7.38 (PROTOCOL_MINOR): a newer kernel
 * falls back to it, and nothing after 7.38 is needed by darefs.
 *
 * Numbers: every 64-bit field is a JS number. Identifiers the kernel echoes back (unique, nodeid,
 * fh, interrupt target) must be exact, so a value above 2**53 there is a ProtocolError rather
 * than a silently different identifier. Offsets, sizes and counts above 2**53 are rounded to
 * the nearest double (never wrapped, never negative); times are signed.
 *
 * Names are Buffers, subarrays of the request (no copy), without their trailing NUL: bytes end
 * to end, so names that are not UTF-8 survive. A Request holds views into the buffer it was
 * decoded from: the caller must not reuse that buffer while the request is live.
 */

/** The protocol version we implement. */
export const PROTOCOL_MAJOR = 7;
export const PROTOCOL_MINOR = 38;

export const FUSE_ROOT_ID = 1;

/** Opcodes (linux/fuse.h enum fuse_opcode; STATX is 7.39). 7 and 19 were never assigned. */
export const Op = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  GETLK: 31,
  SETLK: 32,
  SETLKW: 33,
  ACCESS: 34,
  CREATE: 35,
  INTERRUPT: 36,
  BMAP: 37,
  DESTROY: 38,
  IOCTL: 39,
  POLL: 40,
  NOTIFY_REPLY: 41,
  BATCH_FORGET: 42,
  FALLOCATE: 43,
  READDIRPLUS: 44,
  RENAME2: 45,
  LSEEK: 46,
  COPY_FILE_RANGE: 47,
  SETUPMAPPING: 48,
  REMOVEMAPPING: 49,
  SYNCFS: 50,
  TMPFILE: 51,
  STATX: 52,
} as const;

const OP_NAMES: string[] = [];
for (const [name, code] of Object.entries(Op)) OP_NAMES[code] = name;

/** The opcode's name as in linux/fuse.h without FUSE_ (for logs and errors), or OP_<n>. */
export function opName(op: number): string {
  return (Number.isInteger(op) && op >= 0 ? OP_NAMES[op] : undefined) ?? `OP_${op}`;
}

/**
 * Whether the kernel waits for an answer to this opcode. FORGET, BATCH_FORGET and NOTIFY_REPLY
 * must never be answered (the kernel rejects the write with ENOENT). INTERRUPT may go
 * unanswered; an answer is either EAGAIN (the kernel resends it later) or ENOSYS (no more
 * interrupts are sent), header only.
 */
export function expectsReply(opcode: number): boolean {
  return opcode !== Op.FORGET && opcode !== Op.BATCH_FORGET && opcode !== Op.NOTIFY_REPLY && opcode !== Op.INTERRUPT;
}

// --- constants (linux/fuse.h) ---

/** fuse_setattr_in.valid */
export const FATTR_MODE = 1 << 0;
export const FATTR_UID = 1 << 1;
export const FATTR_GID = 1 << 2;
export const FATTR_SIZE = 1 << 3;
export const FATTR_ATIME = 1 << 4;
export const FATTR_MTIME = 1 << 5;
export const FATTR_FH = 1 << 6;
export const FATTR_ATIME_NOW = 1 << 7;
export const FATTR_MTIME_NOW = 1 << 8;
export const FATTR_LOCKOWNER = 1 << 9;
export const FATTR_CTIME = 1 << 10;
export const FATTR_KILL_SUIDGID = 1 << 11;

/** fuse_open_out.open_flags */
export const FOPEN_DIRECT_IO = 1 << 0;
export const FOPEN_KEEP_CACHE = 1 << 1;
export const FOPEN_NONSEEKABLE = 1 << 2;
export const FOPEN_CACHE_DIR = 1 << 3;
export const FOPEN_STREAM = 1 << 4;
export const FOPEN_NOFLUSH = 1 << 5;
export const FOPEN_PARALLEL_DIRECT_WRITES = 1 << 6;

/**
 * INIT flags. Bits 0-31 travel in `flags`, bits 32-63 in `flags2` (only with FUSE_INIT_EXT).
 * Here they are one number (bit n = 2**n), so combine them with `+` or flagsOr, never `|`
 * (JS bitwise operators truncate to 32 bits); test them with hasFlag.
 */
export const FUSE_ASYNC_READ = 2 ** 0;
export const FUSE_POSIX_LOCKS = 2 ** 1;
export const FUSE_FILE_OPS = 2 ** 2;
export const FUSE_ATOMIC_O_TRUNC = 2 ** 3;
export const FUSE_EXPORT_SUPPORT = 2 ** 4;
export const FUSE_BIG_WRITES = 2 ** 5;
export const FUSE_DONT_MASK = 2 ** 6;
export const FUSE_SPLICE_WRITE = 2 ** 7;
export const FUSE_SPLICE_MOVE = 2 ** 8;
export const FUSE_SPLICE_READ = 2 ** 9;
export const FUSE_FLOCK_LOCKS = 2 ** 10;
export const FUSE_HAS_IOCTL_DIR = 2 ** 11;
export const FUSE_AUTO_INVAL_DATA = 2 ** 12;
export const FUSE_DO_READDIRPLUS = 2 ** 13;
export const FUSE_READDIRPLUS_AUTO = 2 ** 14;
export const FUSE_ASYNC_DIO = 2 ** 15;
export const FUSE_WRITEBACK_CACHE = 2 ** 16;
export const FUSE_NO_OPEN_SUPPORT = 2 ** 17;
export const FUSE_PARALLEL_DIROPS = 2 ** 18;
export const FUSE_HANDLE_KILLPRIV = 2 ** 19;
export const FUSE_POSIX_ACL = 2 ** 20;
export const FUSE_ABORT_ERROR = 2 ** 21;
export const FUSE_MAX_PAGES = 2 ** 22;
export const FUSE_CACHE_SYMLINKS = 2 ** 23;
export const FUSE_NO_OPENDIR_SUPPORT = 2 ** 24;
export const FUSE_EXPLICIT_INVAL_DATA = 2 ** 25;
export const FUSE_MAP_ALIGNMENT = 2 ** 26;
export const FUSE_SUBMOUNTS = 2 ** 27;
export const FUSE_HANDLE_KILLPRIV_V2 = 2 ** 28;
export const FUSE_SETXATTR_EXT = 2 ** 29;
export const FUSE_INIT_EXT = 2 ** 30;
export const FUSE_INIT_RESERVED = 2 ** 31;
export const FUSE_SECURITY_CTX = 2 ** 32;
export const FUSE_HAS_INODE_DAX = 2 ** 33;
export const FUSE_CREATE_SUPP_GROUP = 2 ** 34;
export const FUSE_HAS_EXPIRE_ONLY = 2 ** 35;
/** 7.39+ bits: named so logs of a kernel's offer can say what it is; never granted at minor 38. */
export const FUSE_DIRECT_IO_ALLOW_MMAP = 2 ** 36;
export const FUSE_PASSTHROUGH = 2 ** 37;
export const FUSE_NO_EXPORT_SUPPORT = 2 ** 38;
export const FUSE_HAS_RESEND = 2 ** 39;
export const FUSE_ALLOW_IDMAP = 2 ** 40;
export const FUSE_OVER_IO_URING = 2 ** 41;
export const FUSE_REQUEST_TIMEOUT = 2 ** 42;

/** fuse_release_in.release_flags */
export const FUSE_RELEASE_FLUSH = 1 << 0;
export const FUSE_RELEASE_FLOCK_UNLOCK = 1 << 1;
/** fuse_getattr_in.getattr_flags */
export const FUSE_GETATTR_FH = 1 << 0;
/** fuse_write_in.write_flags */
export const FUSE_WRITE_CACHE = 1 << 0;
export const FUSE_WRITE_LOCKOWNER = 1 << 1;
export const FUSE_WRITE_KILL_SUIDGID = 1 << 2;
/** fuse_read_in.read_flags */
export const FUSE_READ_LOCKOWNER = 1 << 1;
/** fuse_fsync_in.fsync_flags */
export const FUSE_FSYNC_FDATASYNC = 1 << 0;
/** fuse_open_in.open_flags */
export const FUSE_OPEN_KILL_SUIDGID = 1 << 0;
/** fuse_setxattr_in.setxattr_flags */
export const FUSE_SETXATTR_ACL_KILL_SGID = 1 << 0;
/** fuse_notify_inval_entry_out.flags */
export const FUSE_EXPIRE_ONLY = 1 << 0;
/** fuse_attr.flags */
export const FUSE_ATTR_SUBMOUNT = 1 << 0;
export const FUSE_ATTR_DAX = 1 << 1;

/** renameat2(2) flags as they arrive in fuse_rename2_in.flags. */
export const RENAME_NOREPLACE = 1 << 0;
export const RENAME_EXCHANGE = 1 << 1;
export const RENAME_WHITEOUT = 1 << 2;

/** fallocate(2) modes as they arrive in fuse_fallocate_in.mode. */
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_NO_HIDE_STALE = 0x04;
export const FALLOC_FL_COLLAPSE_RANGE = 0x08;
export const FALLOC_FL_ZERO_RANGE = 0x10;
export const FALLOC_FL_INSERT_RANGE = 0x20;
export const FALLOC_FL_UNSHARE_RANGE = 0x40;

/** lseek(2) whence values that reach FUSE_LSEEK (the kernel handles SET/CUR/END itself). */
export const SEEK_SET = 0;
export const SEEK_CUR = 1;
export const SEEK_END = 2;
export const SEEK_DATA = 3;
export const SEEK_HOLE = 4;

/** enum fuse_notify_code: sent as the `error` field of an out header whose unique is 0. */
export const FUSE_NOTIFY_POLL = 1;
export const FUSE_NOTIFY_INVAL_INODE = 2;
export const FUSE_NOTIFY_INVAL_ENTRY = 3;
export const FUSE_NOTIFY_STORE = 4;
export const FUSE_NOTIFY_RETRIEVE = 5;
export const FUSE_NOTIFY_DELETE = 6;

/** d_type values (dirent.h). */
export const DT_UNKNOWN = 0;
export const DT_FIFO = 1;
export const DT_CHR = 2;
export const DT_DIR = 4;
export const DT_BLK = 6;
export const DT_REG = 8;
export const DT_LNK = 10;
export const DT_SOCK = 12;

/** The kernel rejects a whole READDIR reply (EIO) holding a name longer than this. */
export const FUSE_NAME_MAX = 1024;
/** Pages per request without FUSE_MAX_PAGES, and the most the kernel grants with it. */
export const FUSE_DEFAULT_MAX_PAGES = 32;
export const FUSE_MAX_MAX_PAGES = 256;
/** The kernel refuses reads of /dev/fuse into buffers smaller than this. */
export const FUSE_MIN_READ_BUFFER = 8192;
/** Page size assumed for max_pages arithmetic (x86-64, arm64 with 4 KiB pages). */
export const PAGE_SIZE = 4096;

// --- sizes (linux/fuse.h) ---

export const IN_HEADER_SIZE = 40;
export const OUT_HEADER_SIZE = 16;
export const ATTR_SIZE = 88;
export const COMPAT_ATTR_SIZE = 80; // before 7.9: no blksize, no flags
export const ENTRY_OUT_SIZE = 128;
export const COMPAT_ENTRY_OUT_SIZE = 120;
export const ATTR_OUT_SIZE = 104;
export const COMPAT_ATTR_OUT_SIZE = 96;
export const OPEN_OUT_SIZE = 16;
export const WRITE_OUT_SIZE = 8;
export const STATFS_OUT_SIZE = 80;
export const COMPAT_STATFS_SIZE = 48; // before 7.4
export const GETXATTR_OUT_SIZE = 8;
export const LSEEK_OUT_SIZE = 8;
export const INIT_OUT_SIZE = 64;
export const COMPAT_INIT_OUT_SIZE = 8; // kernel minor < 5
export const COMPAT_22_INIT_OUT_SIZE = 24; // kernel minor < 23
export const DIRENT_HEADER_SIZE = 24;
export const DIRENTPLUS_HEADER_SIZE = ENTRY_OUT_SIZE + DIRENT_HEADER_SIZE; // 152

/** A request the kernel sent that cannot be decoded: names the opcode and, when known, unique. */
export class ProtocolError extends Error {
  override readonly name: string = 'ProtocolError';
  constructor(
    /** Opcode of the request, when the header could be read. */
    readonly opcode: number | undefined,
    /** unique of the request, when the header could be read: answer it (EIO) so it does not hang. */
    readonly unique: number | undefined,
    detail: string,
  ) {
    super(opcode === undefined ? `FUSE request: ${detail}` : `FUSE ${opName(opcode)} request (unique ${unique ?? 'unknown'}): ${detail}`);
  }
}

/** A reply or notification darefs asked for that the kernel would reject: a bug in the caller. */
export class ReplyEncodingError extends Error {
  override readonly name: string = 'ReplyEncodingError';
}

// --- numbers ---

const TWO32 = 4294967296;
const TWO63 = 2 ** 63;
const TWO64 = 2 ** 64;
/** High word above which lo + hi * 2**32 is no longer an exact integer. */
const SAFE_HI = 0x1fffff;

/** An unsigned 64-bit field, rounded to the nearest double above 2**53. */
function u64(b: Buffer, off: number): number {
  return b.readUInt32LE(off) + b.readUInt32LE(off + 4) * TWO32;
}

/** A signed 64-bit field (times). */
function i64(b: Buffer, off: number): number {
  return b.readUInt32LE(off) + b.readInt32LE(off + 4) * TWO32;
}

/** A 64-bit identifier the kernel will expect back unchanged. */
function id64(b: Buffer, off: number, op: number, unique: number | undefined, what: string): number {
  const hi = b.readUInt32LE(off + 4);
  if (hi > SAFE_HI) throw new ProtocolError(op, unique, `${what} above 2**53 cannot be represented exactly`);
  return b.readUInt32LE(off) + hi * TWO32;
}

/** Writes an unsigned 64-bit field; throws (RangeError) below 0 or at 2**64 and above. */
function putU64(v: DataView, off: number, x: number): void {
  if (!(x >= 0 && x < TWO64)) throw new RangeError(`${x} does not fit an unsigned 64-bit field`);
  const lo = x % TWO32;
  v.setUint32(off, lo, true);
  v.setUint32(off + 4, (x - lo) / TWO32, true);
}

/** Writes a signed 64-bit field (times, offsets in notifications). */
function putI64(v: DataView, off: number, x: number): void {
  if (!(x >= -TWO63 && x < TWO63)) throw new RangeError(`${x} does not fit a signed 64-bit field`);
  const hi = Math.floor(x / TWO32);
  v.setUint32(off, x - hi * TWO32, true);
  v.setInt32(off + 4, hi, true);
}

/** Splits a timeout in seconds (fractional allowed, negative treated as 0) into sec + nsec. */
function putValid(v: DataView, secOff: number, nsecOff: number, seconds: number): void {
  const s = seconds > 0 ? seconds : 0;
  let sec = Math.floor(s);
  let nsec = Math.round((s - sec) * 1e9);
  if (nsec >= 1e9) {
    sec += 1;
    nsec = 0;
  }
  putU64(v, secOff, sec);
  v.setUint32(nsecOff, nsec, true);
}

/**
 * Encoders write through a DataView: Buffer's writeUInt32LE checks every call and costs ~10x
 * more, which shows in READDIRPLUS replies (~25 fields per entry).
 */
function viewOf(b: Buffer): DataView {
  return new DataView(b.buffer, b.byteOffset, b.length);
}

/** A zero-filled buffer (reply padding must be zero; allocUnsafe is pooled and so cheap). */
function zeroed(n: number): Buffer {
  return Buffer.allocUnsafe(n).fill(0);
}

/** Bit test for INIT flags as one number (bits 0-52). */
export function hasFlag(flags: number, flag: number): boolean {
  return flagsAnd(flags, flag) !== 0;
}

/** a & b for INIT flags as one number (bits 0-52; `&` would truncate to 32 bits). */
export function flagsAnd(a: number, b: number): number {
  const alo = a % TWO32;
  const blo = b % TWO32;
  const hi = (((a - alo) / TWO32) & ((b - blo) / TWO32)) >>> 0;
  return ((alo & blo) >>> 0) + hi * TWO32;
}

/** a | b for INIT flags as one number (bits 0-52). */
export function flagsOr(a: number, b: number): number {
  const alo = a % TWO32;
  const blo = b % TWO32;
  const hi = (((a - alo) / TWO32) | ((b - blo) / TWO32)) >>> 0;
  return ((alo | blo) >>> 0) + hi * TWO32;
}

// --- requests ---

export interface RequestHeader {
  /** Total length of the request including header and extensions. */
  len: number;
  opcode: number;
  unique: number;
  nodeid: number;
  uid: number;
  gid: number;
  pid: number;
  /** Length of the extensions after the body, in 8-byte units (7.38; 0 before). */
  extlen: number;
}

/** Decodes the 40-byte fuse_in_header. Throws ProtocolError if it does not fit the buffer. */
export function decodeHeader(buf: Buffer): RequestHeader {
  if (buf.length < IN_HEADER_SIZE) throw new ProtocolError(undefined, undefined, `${buf.length} bytes, shorter than the 40-byte header`);
  const opcode = buf.readUInt32LE(4);
  const len = buf.readUInt32LE(0);
  const unique = u64(buf, 8);
  // No unique on this error: an inexact one must not be answered (it would name another request).
  if (buf.readUInt32LE(12) > SAFE_HI) throw new ProtocolError(opcode, undefined, 'unique above 2**53 cannot be represented exactly');
  return {
    len,
    opcode,
    unique,
    nodeid: id64(buf, 16, opcode, unique, 'nodeid'),
    uid: buf.readUInt32LE(24),
    gid: buf.readUInt32LE(28),
    pid: buf.readUInt32LE(32),
    extlen: buf.readUInt16LE(36),
  };
}

export interface SetattrTime {
  sec: number;
  nsec: number;
}

type Req<K extends string, F = unknown> = { h: RequestHeader; kind: K } & F;

export type LookupRequest = Req<'lookup', { name: Buffer }>;
/** Never answered. h.nodeid is the node. */
export type ForgetRequest = Req<'forget', { nlookup: number }>;
/** Never answered. */
export type BatchForgetRequest = Req<'batchForget', { items: Array<{ nodeid: number; nlookup: number }> }>;
/** fh is present when FUSE_GETATTR_FH was set (fstat on an open file). */
export type GetattrRequest = Req<'getattr', { fh?: number }>;
/**
 * Each optional field is present exactly when its FATTR_ bit is set in `valid`. With
 * FATTR_ATIME_NOW the kernel also sets FATTR_ATIME and fills atime with its own clock.
 */
export type SetattrRequest = Req<
  'setattr',
  {
    valid: number;
    fh?: number;
    size?: number;
    lockOwner?: number;
    atime?: SetattrTime;
    mtime?: SetattrTime;
    ctime?: SetattrTime;
    atimeNow: boolean;
    mtimeNow: boolean;
    killSuidgid: boolean;
    mode?: number;
    uid?: number;
    gid?: number;
  }
>;
export type ReadlinkRequest = Req<'readlink'>;
export type SymlinkRequest = Req<'symlink', { name: Buffer; target: Buffer }>;
export type MknodRequest = Req<'mknod', { name: Buffer; mode: number; rdev: number; umask: number }>;
export type MkdirRequest = Req<'mkdir', { name: Buffer; mode: number; umask: number }>;
export type UnlinkRequest = Req<'unlink', { name: Buffer }>;
export type RmdirRequest = Req<'rmdir', { name: Buffer }>;
/** RENAME and RENAME2 both decode to this; flags is 0 for RENAME. h.nodeid is the old parent. */
export type RenameRequest = Req<'rename', { newdir: number; oldName: Buffer; newName: Buffer; flags: number }>;
/** h.nodeid is the new parent. */
export type LinkRequest = Req<'link', { oldnodeid: number; name: Buffer }>;
export type OpenRequest = Req<'open', { flags: number; openFlags: number }>;
export type CreateRequest = Req<'create', { name: Buffer; flags: number; mode: number; umask: number; openFlags: number }>;
export type ReadRequest = Req<'read', { fh: number; offset: number; size: number; readFlags: number; flags: number; lockOwner?: number }>;
/** data is a subarray of the request (no copy) of exactly `size` bytes. */
export type WriteRequest = Req<
  'write',
  { fh: number; offset: number; size: number; writeFlags: number; flags: number; lockOwner?: number; data: Buffer }
>;
export type StatfsRequest = Req<'statfs'>;
export type ReleaseRequest = Req<'release', { fh: number; flags: number; releaseFlags: number; lockOwner: number }>;
export type ReleasedirRequest = Req<'releasedir', { fh: number; flags: number; releaseFlags: number; lockOwner: number }>;
export type FsyncRequest = Req<'fsync', { fh: number; datasync: boolean }>;
export type FsyncdirRequest = Req<'fsyncdir', { fh: number; datasync: boolean }>;
/** value is a subarray of the request (no copy). setxattrFlags is 0 without FUSE_SETXATTR_EXT. */
export type SetxattrRequest = Req<'setxattr', { name: Buffer; value: Buffer; flags: number; setxattrFlags: number }>;
/** size 0 asks for the value's size (answer with encodeXattrSize). */
export type GetxattrRequest = Req<'getxattr', { name: Buffer; size: number }>;
export type ListxattrRequest = Req<'listxattr', { size: number }>;
export type RemovexattrRequest = Req<'removexattr', { name: Buffer }>;
export type FlushRequest = Req<'flush', { fh: number; lockOwner: number }>;
/**
 * flags is the kernel's offer as one number: flags + flags2 * 2**32 (flags2 only when the kernel
 * set FUSE_INIT_EXT); flagsLo/flagsHi are the two words as sent.
 */
export type InitRequest = Req<'init', { major: number; minor: number; maxReadahead: number; flags: number; flagsLo: number; flagsHi: number }>;
export type OpendirRequest = Req<'opendir', { flags: number; openFlags: number }>;
export type ReaddirRequest = Req<'readdir', { fh: number; offset: number; size: number }>;
export type ReaddirplusRequest = Req<'readdirplus', { fh: number; offset: number; size: number }>;
export type AccessRequest = Req<'access', { mask: number }>;
/** Names another request by its unique. No reply is needed; EAGAIN asks the kernel to resend. */
export type InterruptRequest = Req<'interrupt', { target: number }>;
export type DestroyRequest = Req<'destroy'>;
export type FallocateRequest = Req<'fallocate', { fh: number; offset: number; length: number; mode: number }>;
export type LseekRequest = Req<'lseek', { fh: number; offset: number; whence: number }>;
export type SyncfsRequest = Req<'syncfs'>;
export type StatxRequest = Req<'statx', { getattrFlags: number; fh?: number; sxFlags: number; sxMask: number }>;
/** h.nodeid is the input inode. */
export type CopyFileRangeRequest = Req<
  'copyFileRange',
  { fhIn: number; offIn: number; nodeidOut: number; fhOut: number; offOut: number; len: number; flags: number }
>;
/** Any opcode without a variant above (GETLK, IOCTL, BMAP, POLL, TMPFILE, ...): answer ENOSYS. */
export type UnknownRequest = Req<'unknown'>;

export type Request =
  | LookupRequest
  | ForgetRequest
  | BatchForgetRequest
  | GetattrRequest
  | SetattrRequest
  | ReadlinkRequest
  | SymlinkRequest
  | MknodRequest
  | MkdirRequest
  | UnlinkRequest
  | RmdirRequest
  | RenameRequest
  | LinkRequest
  | OpenRequest
  | CreateRequest
  | ReadRequest
  | WriteRequest
  | StatfsRequest
  | ReleaseRequest
  | ReleasedirRequest
  | FsyncRequest
  | FsyncdirRequest
  | SetxattrRequest
  | GetxattrRequest
  | ListxattrRequest
  | RemovexattrRequest
  | FlushRequest
  | InitRequest
  | OpendirRequest
  | ReaddirRequest
  | ReaddirplusRequest
  | AccessRequest
  | InterruptRequest
  | DestroyRequest
  | FallocateRequest
  | LseekRequest
  | SyncfsRequest
  | StatxRequest
  | CopyFileRangeRequest
  | UnknownRequest;

export interface Session {
  /** The negotiated minor (before INIT is answered any value: INIT itself does not depend on it). */
  minor: number;
  /** Whether FUSE_SETXATTR_EXT was granted (fuse_setxattr_in is then 16 bytes, else 8). */
  setxattrExt: boolean;
}

/** Cursor over one request's body; every read checks the body's end and names the opcode. */
class Body {
  pos: number;
  constructor(
    readonly buf: Buffer,
    readonly h: RequestHeader,
    readonly end: number,
  ) {
    this.pos = IN_HEADER_SIZE;
  }

  fail(detail: string): never {
    throw new ProtocolError(this.h.opcode, this.h.unique, detail);
  }

  /** Claims a fixed struct of n bytes; returns its offset. */
  struct(n: number, what: string): number {
    const at = this.pos;
    if (this.end - at < n) this.fail(`body has ${this.end - at} bytes at offset ${at}, ${what} needs ${n}`);
    this.pos = at + n;
    return at;
  }

  remaining(): number {
    return this.end - this.pos;
  }

  /** A NUL-terminated name: the bytes before the NUL, no copy. */
  name(what: string): Buffer {
    const start = this.pos;
    const nul = this.buf.indexOf(0, start);
    if (nul < 0 || nul >= this.end) this.fail(`${what} has no terminating NUL`);
    if (nul === start) this.fail(`${what} is empty`);
    const name = this.buf.subarray(start, nul);
    // The kernel never sends a name with '/': one that did would reach outside its directory.
    if (name.indexOf(0x2f) >= 0) this.fail(`${what} contains '/'`);
    this.pos = nul + 1;
    return name;
  }

  /** Symlink targets may hold '/' and nothing else is checked but the NUL. */
  target(what: string): Buffer {
    const start = this.pos;
    const nul = this.buf.indexOf(0, start);
    if (nul < 0 || nul >= this.end) this.fail(`${what} has no terminating NUL`);
    this.pos = nul + 1;
    return this.buf.subarray(start, nul);
  }

  /** The body must have been consumed exactly (a layout disagreement shows up here). */
  done(): void {
    if (this.pos !== this.end) this.fail(`${this.end - this.pos} unexpected bytes after offset ${this.pos}`);
  }

  id(off: number, what: string): number {
    return id64(this.buf, off, this.h.opcode, this.h.unique, what);
  }
}

function nameOnly<K extends 'lookup' | 'unlink' | 'rmdir' | 'removexattr'>(kind: K, b: Body): Req<K, { name: Buffer }> {
  const name = b.name('name');
  b.done();
  return { h: b.h, kind, name } as Req<K, { name: Buffer }>;
}

/**
 * Decodes one request. `buf` holds exactly one request (its header's len equals buf.length).
 * Throws ProtocolError naming the opcode on a short or malformed request; an opcode without a
 * variant decodes as `unknown` (its body unchecked).
 */
export function decodeRequest(buf: Buffer, session: Session): Request {
  const h = decodeHeader(buf);
  if (h.len !== buf.length) throw new ProtocolError(h.opcode, h.unique, `header says ${h.len} bytes, read ${buf.length}`);
  const end = h.len - h.extlen * 8;
  if (end < IN_HEADER_SIZE) throw new ProtocolError(h.opcode, h.unique, `extensions of ${h.extlen * 8} bytes exceed the ${h.len - IN_HEADER_SIZE}-byte body`);
  const b = new Body(buf, h, end);
  const minor = session.minor;
  switch (h.opcode) {
    case Op.LOOKUP:
      return nameOnly('lookup', b);
    case Op.FORGET: {
      const o = b.struct(8, 'fuse_forget_in');
      b.done();
      return { h, kind: 'forget', nlookup: u64(buf, o) };
    }
    case Op.BATCH_FORGET: {
      const o = b.struct(8, 'fuse_batch_forget_in');
      const count = buf.readUInt32LE(o);
      if (b.remaining() !== count * 16) b.fail(`count ${count} needs ${count * 16} bytes of fuse_forget_one, body has ${b.remaining()}`);
      const items = new Array<{ nodeid: number; nlookup: number }>(count);
      for (let i = 0; i < count; i++) {
        const p = b.struct(16, 'fuse_forget_one');
        items[i] = { nodeid: b.id(p, 'nodeid'), nlookup: u64(buf, p + 8) };
      }
      return { h, kind: 'batchForget', items };
    }
    case Op.GETATTR: {
      // Before 7.9 GETATTR had no body.
      if (minor < 9 && b.remaining() === 0) return { h, kind: 'getattr' };
      const o = b.struct(16, 'fuse_getattr_in');
      b.done();
      const flags = buf.readUInt32LE(o);
      return flags & FUSE_GETATTR_FH ? { h, kind: 'getattr', fh: b.id(o + 8, 'fh') } : { h, kind: 'getattr' };
    }
    case Op.SETATTR:
      return decodeSetattr(b);
    case Op.READLINK:
      b.done();
      return { h, kind: 'readlink' };
    case Op.SYMLINK: {
      const name = b.name('name');
      const target = b.target('target');
      b.done();
      return { h, kind: 'symlink', name, target };
    }
    case Op.MKNOD: {
      const o = b.struct(minor < 12 ? 8 : 16, 'fuse_mknod_in');
      const name = b.name('name');
      b.done();
      return { h, kind: 'mknod', name, mode: buf.readUInt32LE(o), rdev: buf.readUInt32LE(o + 4), umask: minor < 12 ? 0 : buf.readUInt32LE(o + 8) };
    }
    case Op.MKDIR: {
      const o = b.struct(8, 'fuse_mkdir_in');
      const name = b.name('name');
      b.done();
      return { h, kind: 'mkdir', name, mode: buf.readUInt32LE(o), umask: minor < 12 ? 0 : buf.readUInt32LE(o + 4) };
    }
    case Op.UNLINK:
      return nameOnly('unlink', b);
    case Op.RMDIR:
      return nameOnly('rmdir', b);
    case Op.RENAME:
    case Op.RENAME2: {
      const two = h.opcode === Op.RENAME2;
      const o = b.struct(two ? 16 : 8, two ? 'fuse_rename2_in' : 'fuse_rename_in');
      const oldName = b.name('old name');
      const newName = b.name('new name');
      b.done();
      return { h, kind: 'rename', newdir: b.id(o, 'newdir'), oldName, newName, flags: two ? buf.readUInt32LE(o + 8) : 0 };
    }
    case Op.LINK: {
      const o = b.struct(8, 'fuse_link_in');
      const name = b.name('name');
      b.done();
      return { h, kind: 'link', oldnodeid: b.id(o, 'oldnodeid'), name };
    }
    case Op.OPEN:
    case Op.OPENDIR: {
      const o = b.struct(8, 'fuse_open_in');
      b.done();
      const flags = buf.readUInt32LE(o);
      const openFlags = buf.readUInt32LE(o + 4);
      return h.opcode === Op.OPEN ? { h, kind: 'open', flags, openFlags } : { h, kind: 'opendir', flags, openFlags };
    }
    case Op.CREATE: {
      // Before 7.12 CREATE carried a fuse_open_in (flags, mode) only.
      const old = minor < 12;
      const o = b.struct(old ? 8 : 16, 'fuse_create_in');
      const name = b.name('name');
      b.done();
      return {
        h,
        kind: 'create',
        name,
        flags: buf.readUInt32LE(o),
        mode: buf.readUInt32LE(o + 4),
        umask: old ? 0 : buf.readUInt32LE(o + 8),
        openFlags: old ? 0 : buf.readUInt32LE(o + 12),
      };
    }
    case Op.READ:
    case Op.READDIR:
    case Op.READDIRPLUS: {
      // fuse_read_in is 40 bytes from 7.9, 24 before (no lock_owner, no flags).
      const full = minor >= 9;
      const o = b.struct(full ? 40 : 24, 'fuse_read_in');
      b.done();
      const fh = b.id(o, 'fh');
      const offset = u64(buf, o + 8);
      const size = buf.readUInt32LE(o + 16);
      if (h.opcode === Op.READDIR) return { h, kind: 'readdir', fh, offset, size };
      if (h.opcode === Op.READDIRPLUS) return { h, kind: 'readdirplus', fh, offset, size };
      const readFlags = buf.readUInt32LE(o + 20);
      const r: ReadRequest = { h, kind: 'read', fh, offset, size, readFlags, flags: full ? buf.readUInt32LE(o + 32) : 0 };
      if (full && readFlags & FUSE_READ_LOCKOWNER) r.lockOwner = u64(buf, o + 24);
      return r;
    }
    case Op.WRITE: {
      const full = minor >= 9;
      const o = b.struct(full ? 40 : 24, 'fuse_write_in');
      const size = buf.readUInt32LE(o + 16);
      if (b.remaining() !== size) b.fail(`size field says ${size} bytes of data, body has ${b.remaining()}`);
      const writeFlags = buf.readUInt32LE(o + 20);
      const w: WriteRequest = {
        h,
        kind: 'write',
        fh: b.id(o, 'fh'),
        offset: u64(buf, o + 8),
        size,
        writeFlags,
        flags: full ? buf.readUInt32LE(o + 32) : 0,
        data: buf.subarray(b.pos, end),
      };
      if (full && writeFlags & FUSE_WRITE_LOCKOWNER) w.lockOwner = u64(buf, o + 24);
      return w;
    }
    case Op.STATFS:
      b.done();
      return { h, kind: 'statfs' };
    case Op.RELEASE:
    case Op.RELEASEDIR: {
      // lock_owner arrived in 7.8; older kernels send 16 bytes.
      const o = b.struct(16, 'fuse_release_in');
      const lockOwner = b.remaining() >= 8 ? u64(buf, b.struct(8, 'fuse_release_in.lock_owner')) : 0;
      b.done();
      const fields = { fh: b.id(o, 'fh'), flags: buf.readUInt32LE(o + 8), releaseFlags: buf.readUInt32LE(o + 12), lockOwner };
      return h.opcode === Op.RELEASE ? { h, kind: 'release', ...fields } : { h, kind: 'releasedir', ...fields };
    }
    case Op.FSYNC:
    case Op.FSYNCDIR: {
      const o = b.struct(16, 'fuse_fsync_in');
      b.done();
      const fh = b.id(o, 'fh');
      const datasync = (buf.readUInt32LE(o + 8) & FUSE_FSYNC_FDATASYNC) !== 0;
      return h.opcode === Op.FSYNC ? { h, kind: 'fsync', fh, datasync } : { h, kind: 'fsyncdir', fh, datasync };
    }
    case Op.SETXATTR: {
      const o = b.struct(session.setxattrExt ? 16 : 8, 'fuse_setxattr_in');
      const size = buf.readUInt32LE(o);
      const name = b.name('attribute name');
      if (b.remaining() !== size) b.fail(`size field says ${size} bytes of value, body has ${b.remaining()}`);
      return {
        h,
        kind: 'setxattr',
        name,
        value: buf.subarray(b.pos, end),
        flags: buf.readUInt32LE(o + 4),
        setxattrFlags: session.setxattrExt ? buf.readUInt32LE(o + 8) : 0,
      };
    }
    case Op.GETXATTR: {
      const o = b.struct(8, 'fuse_getxattr_in');
      const name = b.name('attribute name');
      b.done();
      return { h, kind: 'getxattr', name, size: buf.readUInt32LE(o) };
    }
    case Op.LISTXATTR: {
      const o = b.struct(8, 'fuse_getxattr_in');
      b.done();
      return { h, kind: 'listxattr', size: buf.readUInt32LE(o) };
    }
    case Op.REMOVEXATTR:
      return nameOnly('removexattr', b);
    case Op.FLUSH: {
      const o = b.struct(24, 'fuse_flush_in');
      b.done();
      return { h, kind: 'flush', fh: b.id(o, 'fh'), lockOwner: u64(buf, o + 16) };
    }
    case Op.INIT:
      return decodeInit(b);
    case Op.ACCESS: {
      const o = b.struct(8, 'fuse_access_in');
      b.done();
      return { h, kind: 'access', mask: buf.readUInt32LE(o) };
    }
    case Op.INTERRUPT: {
      const o = b.struct(8, 'fuse_interrupt_in');
      b.done();
      return { h, kind: 'interrupt', target: b.id(o, 'target unique') };
    }
    case Op.DESTROY:
      b.done();
      return { h, kind: 'destroy' };
    case Op.FALLOCATE: {
      const o = b.struct(32, 'fuse_fallocate_in');
      b.done();
      return { h, kind: 'fallocate', fh: b.id(o, 'fh'), offset: u64(buf, o + 8), length: u64(buf, o + 16), mode: buf.readUInt32LE(o + 24) };
    }
    case Op.LSEEK: {
      const o = b.struct(24, 'fuse_lseek_in');
      b.done();
      return { h, kind: 'lseek', fh: b.id(o, 'fh'), offset: u64(buf, o + 8), whence: buf.readUInt32LE(o + 16) };
    }
    case Op.SYNCFS: {
      b.struct(8, 'fuse_syncfs_in');
      b.done();
      return { h, kind: 'syncfs' };
    }
    case Op.STATX: {
      const o = b.struct(24, 'fuse_statx_in');
      b.done();
      const getattrFlags = buf.readUInt32LE(o);
      const r: StatxRequest = { h, kind: 'statx', getattrFlags, sxFlags: buf.readUInt32LE(o + 16), sxMask: buf.readUInt32LE(o + 20) };
      if (getattrFlags & FUSE_GETATTR_FH) r.fh = b.id(o + 8, 'fh');
      return r;
    }
    case Op.COPY_FILE_RANGE: {
      const o = b.struct(56, 'fuse_copy_file_range_in');
      b.done();
      return {
        h,
        kind: 'copyFileRange',
        fhIn: b.id(o, 'fh_in'),
        offIn: u64(buf, o + 8),
        nodeidOut: b.id(o + 16, 'nodeid_out'),
        fhOut: b.id(o + 24, 'fh_out'),
        offOut: u64(buf, o + 32),
        len: u64(buf, o + 40),
        flags: u64(buf, o + 48),
      };
    }
    default:
      return { h, kind: 'unknown' };
  }
}

function decodeSetattr(b: Body): SetattrRequest {
  const buf = b.buf;
  const o = b.struct(88, 'fuse_setattr_in');
  b.done();
  const valid = buf.readUInt32LE(o);
  const r: SetattrRequest = {
    h: b.h,
    kind: 'setattr',
    valid,
    atimeNow: (valid & FATTR_ATIME_NOW) !== 0,
    mtimeNow: (valid & FATTR_MTIME_NOW) !== 0,
    killSuidgid: (valid & FATTR_KILL_SUIDGID) !== 0,
  };
  if (valid & FATTR_FH) r.fh = b.id(o + 8, 'fh');
  if (valid & FATTR_SIZE) r.size = u64(buf, o + 16);
  if (valid & FATTR_LOCKOWNER) r.lockOwner = u64(buf, o + 24);
  if (valid & FATTR_ATIME) r.atime = { sec: i64(buf, o + 32), nsec: buf.readUInt32LE(o + 56) };
  if (valid & FATTR_MTIME) r.mtime = { sec: i64(buf, o + 40), nsec: buf.readUInt32LE(o + 60) };
  if (valid & FATTR_CTIME) r.ctime = { sec: i64(buf, o + 48), nsec: buf.readUInt32LE(o + 64) };
  if (valid & FATTR_MODE) r.mode = buf.readUInt32LE(o + 68);
  if (valid & FATTR_UID) r.uid = buf.readUInt32LE(o + 76);
  if (valid & FATTR_GID) r.gid = buf.readUInt32LE(o + 80);
  return r;
}

function decodeInit(b: Body): InitRequest {
  const buf = b.buf;
  // fuse_init_in grew over time: 8 bytes (major, minor) before 7.6, 16 until 7.36, then 64.
  const o = b.struct(8, 'fuse_init_in');
  const n = b.remaining();
  const major = buf.readUInt32LE(o);
  const minor = buf.readUInt32LE(o + 4);
  const maxReadahead = n >= 4 ? buf.readUInt32LE(o + 8) : 0;
  const flagsLo = n >= 8 ? buf.readUInt32LE(o + 12) : 0;
  const flagsHi = n >= 12 && flagsLo & FUSE_INIT_EXT ? buf.readUInt32LE(o + 16) : 0;
  // No exact-size check: a later kernel may grow fuse_init_in again, and must still mount.
  b.pos = b.end;
  return { h: b.h, kind: 'init', major, minor, maxReadahead, flags: flagsLo + flagsHi * TWO32, flagsLo, flagsHi };
}

// --- replies ---

export interface Attr {
  ino: number;
  size: number;
  blocks: number;
  /** Seconds, signed. */
  atime: number;
  atimensec: number;
  mtime: number;
  mtimensec: number;
  ctime: number;
  ctimensec: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  blksize: number;
  /** fuse_attr.flags (FUSE_ATTR_*), 0 when absent. */
  flags?: number;
}

/** Writes fuse_attr at off: 88 bytes, or 80 for a kernel before 7.9 (no blksize, no flags). */
function putAttr(b: DataView, off: number, a: Attr, minor: number): void {
  putU64(b, off, a.ino);
  putU64(b, off + 8, a.size);
  putU64(b, off + 16, a.blocks);
  putI64(b, off + 24, a.atime);
  putI64(b, off + 32, a.mtime);
  putI64(b, off + 40, a.ctime);
  b.setUint32(off + 48, a.atimensec, true);
  b.setUint32(off + 52, a.mtimensec, true);
  b.setUint32(off + 56, a.ctimensec, true);
  b.setUint32(off + 60, a.mode, true);
  b.setUint32(off + 64, a.nlink, true);
  b.setUint32(off + 68, a.uid, true);
  b.setUint32(off + 72, a.gid, true);
  b.setUint32(off + 76, a.rdev, true);
  if (minor >= 9) {
    b.setUint32(off + 80, a.blksize, true);
    b.setUint32(off + 84, a.flags ?? 0, true);
  }
}

/** The fuse_out_header of a successful reply; len is the whole message. */
function outHeader(unique: number, error: number, len: number): Buffer {
  const buf = Buffer.allocUnsafe(OUT_HEADER_SIZE);
  const b = viewOf(buf);
  b.setUint32(0, len, true);
  b.setInt32(4, error, true);
  putU64(b, 8, unique);
  return buf;
}

/**
 * A successful reply: [header, ...payload], to be written with one writev. The header's len is
 * the total of all pieces (the kernel rejects a reply whose len differs from the bytes written).
 */
export function replyOk(unique: number, payload?: Buffer | Buffer[]): Buffer[] {
  if (payload === undefined) return [outHeader(unique, 0, OUT_HEADER_SIZE)];
  if (Buffer.isBuffer(payload)) return [outHeader(unique, 0, OUT_HEADER_SIZE + payload.length), payload];
  let len = OUT_HEADER_SIZE;
  for (const p of payload) len += p.length;
  const out = new Array<Buffer>(payload.length + 1);
  out[0] = outHeader(unique, 0, len);
  for (let i = 0; i < payload.length; i++) out[i + 1] = payload[i];
  return out;
}

/**
 * An error reply (header only). errno may be given positive or negative; it goes out as -errno.
 * The kernel rejects anything outside 1..511 (and the request would then hang): that throws.
 */
export function replyError(unique: number, errno: number): Buffer {
  const e = Math.abs(errno);
  if (!Number.isInteger(e) || e < 1 || e > 511) throw new ReplyEncodingError(`errno ${errno} is not one the kernel accepts (1..511)`);
  return outHeader(unique, -e, OUT_HEADER_SIZE);
}

export interface EntryOut {
  /** 0 with entryValid > 0: a negative entry (the kernel caches "no such name"). */
  nodeid: number;
  generation: number;
  /** Seconds the kernel may cache the name (fractional ok; negative taken as 0). */
  entryValid: number;
  /** Seconds the kernel may cache the attributes. */
  attrValid: number;
  attr: Attr;
}

const ZERO_ATTR: Attr = {
  ino: 0,
  size: 0,
  blocks: 0,
  atime: 0,
  atimensec: 0,
  mtime: 0,
  mtimensec: 0,
  ctime: 0,
  ctimensec: 0,
  mode: 0,
  nlink: 0,
  uid: 0,
  gid: 0,
  rdev: 0,
  blksize: 0,
};

function putEntry(b: DataView, off: number, o: EntryOut, minor: number): void {
  putU64(b, off, o.nodeid);
  putU64(b, off + 8, o.generation);
  putValid(b, off + 16, off + 32, o.entryValid);
  putValid(b, off + 24, off + 36, o.attrValid);
  putAttr(b, off + 40, o.attr, minor);
}

/** fuse_entry_out: 128 bytes (120 for a kernel before 7.9). For LOOKUP, MKNOD, MKDIR, SYMLINK, LINK, and CREATE before fuse_open_out. */
export function encodeEntryOut(o: EntryOut, minor: number = PROTOCOL_MINOR): Buffer {
  const buf = zeroed(minor < 9 ? COMPAT_ENTRY_OUT_SIZE : ENTRY_OUT_SIZE);
  const b = viewOf(buf);
  putEntry(b, 0, o, minor);
  return buf;
}

/** A negative LOOKUP reply: "no such name" that the kernel caches for entryValid seconds. */
export function encodeNegativeEntryOut(entryValid: number, minor: number = PROTOCOL_MINOR): Buffer {
  return encodeEntryOut({ nodeid: 0, generation: 0, entryValid, attrValid: 0, attr: ZERO_ATTR }, minor);
}

/** fuse_attr_out: 104 bytes (96 before 7.9). For GETATTR and SETATTR. */
export function encodeAttrOut(attrValid: number, attr: Attr, minor: number = PROTOCOL_MINOR): Buffer {
  const buf = zeroed(minor < 9 ? COMPAT_ATTR_OUT_SIZE : ATTR_OUT_SIZE);
  const b = viewOf(buf);
  putValid(b, 0, 8, attrValid);
  putAttr(b, 16, attr, minor);
  return buf;
}

/** fuse_open_out: 16 bytes. For OPEN, OPENDIR, and CREATE after fuse_entry_out. */
export function encodeOpenOut(fh: number, openFlags: number): Buffer {
  const buf = zeroed(OPEN_OUT_SIZE);
  const b = viewOf(buf);
  putU64(b, 0, fh);
  b.setUint32(8, openFlags, true);
  return buf;
}

/** fuse_write_out: 8 bytes. */
export function encodeWriteOut(size: number): Buffer {
  const buf = zeroed(WRITE_OUT_SIZE);
  const b = viewOf(buf);
  b.setUint32(0, size, true);
  return buf;
}

export interface Statfs {
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  bsize: number;
  namelen: number;
  frsize: number;
}

/** fuse_statfs_out: 80 bytes (48 for a kernel before 7.4, which had no frsize). */
export function encodeStatfsOut(st: Statfs, minor: number = PROTOCOL_MINOR): Buffer {
  const buf = zeroed(minor < 4 ? COMPAT_STATFS_SIZE : STATFS_OUT_SIZE);
  const b = viewOf(buf);
  putU64(b, 0, st.blocks);
  putU64(b, 8, st.bfree);
  putU64(b, 16, st.bavail);
  putU64(b, 24, st.files);
  putU64(b, 32, st.ffree);
  b.setUint32(40, st.bsize, true);
  b.setUint32(44, st.namelen, true);
  if (minor >= 4) b.setUint32(48, st.frsize, true);
  return buf;
}

/** fuse_getxattr_out: 8 bytes. The answer to GETXATTR/LISTXATTR with size 0. */
export function encodeXattrSize(size: number): Buffer {
  const buf = zeroed(GETXATTR_OUT_SIZE);
  const b = viewOf(buf);
  b.setUint32(0, size, true);
  return buf;
}

const MAX_LOFF = 2 ** 63; // as a double; the largest exact loff_t is 2**63 - 1

/**
 * fuse_lseek_out: 8 bytes. The kernel treats the offset as a signed loff_t: a number at or above
 * 2**63 (a double cannot hold 2**63 - 1) is written as 2**63 - 1.
 */
export function encodeLseekOut(offset: number): Buffer {
  const buf = zeroed(LSEEK_OUT_SIZE);
  const b = viewOf(buf);
  if (offset >= MAX_LOFF) {
    b.setUint32(0, 0xffffffff, true);
    b.setUint32(4, 0x7fffffff, true);
  } else {
    putU64(b, 0, offset);
  }
  return buf;
}

/** d_type from a st_mode (S_IFMT >> 12 is exactly the DT_ value). */
export function modeToDirentType(mode: number): number {
  return (mode >>> 12) & 0xf;
}

function align8(n: number): number {
  return (n + 7) & ~7;
}

/**
 * Fills one READDIR or READDIRPLUS reply: records of fuse_dirent (24 bytes + name) or
 * fuse_direntplus (152 bytes + name), each padded with zeros to 8 bytes (FUSE_DIRENT_ALIGN).
 * The kernel fails the whole reply (EIO) on an empty name, a name with '/' or one over 1024
 * bytes: those throw ReplyEncodingError here instead.
 *
 * With addPlus every entry with a nodeid counts as a LOOKUP for FORGET accounting (the kernel
 * will FORGET it); nodeid 0 (entry null) passes only the name and type.
 */
export class DirentWriter {
  private readonly buf: Buffer;
  private readonly view: DataView;
  private used = 0;

  constructor(
    readonly maxBytes: number,
    private readonly minor: number = PROTOCOL_MINOR,
  ) {
    this.buf = Buffer.allocUnsafe(maxBytes);
    this.view = viewOf(this.buf);
  }

  /** Bytes written so far. */
  get length(): number {
    return this.used;
  }

  /** Appends a fuse_dirent; false (nothing written) if it does not fit. */
  add(ino: number, nextOffset: number, type: number, name: Buffer): boolean {
    checkNameLength(name);
    const rec = align8(DIRENT_HEADER_SIZE + name.length);
    if (this.used + rec > this.maxBytes) return false;
    this.putDirent(this.used, ino, nextOffset, type, name, rec - DIRENT_HEADER_SIZE);
    this.used += rec;
    return true;
  }

  /**
   * Appends a fuse_direntplus; false (nothing written) if it does not fit. The dirent's ino is
   * entry.attr.ino, or `ino` when entry is null. The kernel takes a lookup reference for every
   * entry with a nodeid except "." and ".." (give those null).
   */
  addPlus(entry: EntryOut | null, nextOffset: number, type: number, name: Buffer, ino = 0): boolean {
    checkNameLength(name);
    const rec = align8(DIRENTPLUS_HEADER_SIZE + name.length);
    if (this.used + rec > this.maxBytes) return false;
    const at = this.used;
    // fuse_entry_out is always the full 128 bytes inside a direntplus (READDIRPLUS is 7.21+).
    // putEntry at minor >= 9 writes all 128 bytes; only a null entry needs zeroing.
    if (entry === null) this.buf.fill(0, at, at + ENTRY_OUT_SIZE);
    else putEntry(this.view, at, entry, Math.max(this.minor, 9));
    this.putDirent(at + ENTRY_OUT_SIZE, entry === null ? ino : entry.attr.ino, nextOffset, type, name, rec - DIRENTPLUS_HEADER_SIZE);
    this.used += rec;
    return true;
  }

  /** The records written, as one Buffer (a view of this writer's buffer). */
  finish(): Buffer {
    return this.buf.subarray(0, this.used);
  }

  private putDirent(at: number, ino: number, off: number, type: number, name: Buffer, nameSpace: number): void {
    const v = this.view;
    putU64(v, at, ino);
    putU64(v, at + 8, off);
    v.setUint32(at + 16, name.length, true);
    v.setUint32(at + 20, type, true);
    // One JS pass copies and checks the name: cheaper than copy + two indexOf + fill (each a
    // native call) for the short names of a directory listing.
    const b = this.buf;
    const start = at + DIRENT_HEADER_SIZE;
    const n = name.length;
    for (let i = 0; i < n; i++) {
      const c = name[i];
      if (c === 0 || c === 0x2f) throw new ReplyEncodingError("directory entry name contains '/' or NUL");
      b[start + i] = c;
    }
    for (let i = n; i < nameSpace; i++) b[start + i] = 0;
  }
}

function checkNameLength(name: Buffer): void {
  if (name.length === 0) throw new ReplyEncodingError('directory entry with an empty name');
  if (name.length > FUSE_NAME_MAX) throw new ReplyEncodingError(`directory entry name of ${name.length} bytes exceeds ${FUSE_NAME_MAX}`);
}

// --- notifications ---

const NUL = Buffer.alloc(1);

function checkNotifyName(name: Buffer): void {
  if (name.length === 0 || name.length > FUSE_NAME_MAX) throw new ReplyEncodingError(`notification name of ${name.length} bytes (1..${FUSE_NAME_MAX} allowed)`);
  if (name.indexOf(0) >= 0) throw new ReplyEncodingError('notification name contains NUL');
}

/**
 * FUSE_NOTIFY_INVAL_INODE: drop cached attributes of nodeid and its cached data in
 * [offset, offset+length) (length 0: to the end; offset < 0: attributes only).
 */
export function encodeNotifyInvalInode(nodeid: number, offset: number, length: number): Buffer[] {
  const buf = Buffer.allocUnsafe(OUT_HEADER_SIZE + 24);
  const b = viewOf(buf);
  b.setUint32(0, OUT_HEADER_SIZE + 24, true);
  b.setInt32(4, FUSE_NOTIFY_INVAL_INODE, true);
  putU64(b, 8, 0);
  putU64(b, 16, nodeid);
  putI64(b, 24, offset);
  putI64(b, 32, length);
  return [buf];
}

/** FUSE_NOTIFY_INVAL_ENTRY: drop the cached name in parent (flags: FUSE_EXPIRE_ONLY). */
export function encodeNotifyInvalEntry(parent: number, name: Buffer, flags = 0): Buffer[] {
  checkNotifyName(name);
  const len = OUT_HEADER_SIZE + 16 + name.length + 1;
  const buf = Buffer.allocUnsafe(OUT_HEADER_SIZE + 16);
  const b = viewOf(buf);
  b.setUint32(0, len, true);
  b.setInt32(4, FUSE_NOTIFY_INVAL_ENTRY, true);
  putU64(b, 8, 0);
  putU64(b, 16, parent);
  b.setUint32(24, name.length, true);
  b.setUint32(28, flags, true);
  return [buf, name, NUL];
}

/** FUSE_NOTIFY_DELETE: name in parent, which was child, is gone (also drops the dentry). */
export function encodeNotifyDelete(parent: number, child: number, name: Buffer): Buffer[] {
  checkNotifyName(name);
  const len = OUT_HEADER_SIZE + 24 + name.length + 1;
  const buf = Buffer.allocUnsafe(OUT_HEADER_SIZE + 24);
  const b = viewOf(buf);
  b.setUint32(0, len, true);
  b.setInt32(4, FUSE_NOTIFY_DELETE, true);
  putU64(b, 8, 0);
  putU64(b, 16, parent);
  putU64(b, 24, child);
  b.setUint32(32, name.length, true);
  b.setUint32(36, 0, true);
  return [buf, name, NUL];
}

// --- INIT ---

export interface InitWanted {
  /** Largest WRITE the daemon accepts (capped by maxPages * PAGE_SIZE, at least 4096). */
  maxWrite: number;
  /** Pages per request with FUSE_MAX_PAGES (default: enough for maxWrite; capped at 256). */
  maxPages?: number;
  /** Read-ahead in bytes (default and cap: the kernel's offer). */
  maxReadahead?: number;
  /** 0 or absent: the kernel's default (12). */
  maxBackground?: number;
  /** 0 or absent: the kernel's default (3/4 of maxBackground). */
  congestionThreshold?: number;
  /** Timestamp granularity in ns (default 1). */
  timeGran?: number;
  /** FUSE_* bits the daemon wants, as one number (bits 32-52 are flags2 bits). */
  flags: number;
}

export interface InitAccepted {
  /** The whole reply message (header included), ready to write. */
  reply: Buffer;
  /** The minor both sides now speak: min(kernel's, PROTOCOL_MINOR). */
  minor: number;
  /** Granted: wanted & offered, plus FUSE_INIT_EXT when the kernel offered it. */
  flags: number;
  maxWrite: number;
  /** Pages per request the kernel will use (32 without FUSE_MAX_PAGES). */
  maxPages: number;
  maxReadahead: number;
  /** Smallest buffer every /dev/fuse read must use from now on. */
  readBufferSize: number;
}

/** The kernel's major is newer: write `reply` (our major/minor) and expect a second INIT. */
export interface InitRetry {
  reply: Buffer;
  retry: true;
}

/** The kernel's major is older than ours: answer INIT with this errno (EPROTO). */
export interface InitRefused {
  error: number;
}

export type InitResult = InitAccepted | InitRetry | InitRefused;

const EPROTO = 71;
/** setxattr values reach 64 KiB whatever max_write is; the read buffer must hold one. */
const XATTR_SIZE_MAX = 65536;

function initReply(unique: number, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(OUT_HEADER_SIZE + body.length);
  const ov = viewOf(out);
  ov.setUint32(0, out.length, true);
  ov.setInt32(4, 0, true);
  putU64(ov, 8, unique);
  body.copy(out, OUT_HEADER_SIZE);
  return out;
}

/**
 * Negotiates INIT (linux/fuse.h "Version negotiation"). The reply is sized for the kernel's
 * minor: 8 bytes before 7.5, 24 before 7.23, else 64. flags2 goes out only when the kernel
 * offered FUSE_INIT_EXT (and then INIT_EXT is set in our flags, without which the kernel
 * ignores flags2).
 */
export function negotiateInit(req: InitRequest, wanted: InitWanted): InitResult {
  const unique = req.h.unique;
  if (req.major > PROTOCOL_MAJOR) {
    const body = zeroed(COMPAT_INIT_OUT_SIZE);
    const bv = viewOf(body);
    bv.setUint32(0, PROTOCOL_MAJOR, true);
    bv.setUint32(4, PROTOCOL_MINOR, true);
    return { reply: initReply(unique, body), retry: true };
  }
  if (req.major < PROTOCOL_MAJOR) return { error: EPROTO };

  const minor = Math.min(req.minor, PROTOCOL_MINOR);
  const ext = hasFlag(req.flags, FUSE_INIT_EXT);
  let flags = flagsAnd(wanted.flags, req.flags);
  if (ext) flags = flagsOr(flags, FUSE_INIT_EXT);

  const maxPages = hasFlag(flags, FUSE_MAX_PAGES)
    ? Math.min(FUSE_MAX_MAX_PAGES, Math.max(1, wanted.maxPages ?? Math.ceil(wanted.maxWrite / PAGE_SIZE)))
    : FUSE_DEFAULT_MAX_PAGES;
  // The kernel never sends more than max_pages per request nor less than 4096 as max_write.
  const maxWrite = req.minor < 5 ? PAGE_SIZE : Math.max(PAGE_SIZE, Math.min(wanted.maxWrite, maxPages * PAGE_SIZE));
  const maxReadahead = Math.min(wanted.maxReadahead ?? req.maxReadahead, req.maxReadahead);

  const size = req.minor < 5 ? COMPAT_INIT_OUT_SIZE : req.minor < 23 ? COMPAT_22_INIT_OUT_SIZE : INIT_OUT_SIZE;
  const body = zeroed(INIT_OUT_SIZE);
  const bv = viewOf(body);
  bv.setUint32(0, PROTOCOL_MAJOR, true);
  bv.setUint32(4, minor, true);
  bv.setUint32(8, maxReadahead, true);
  bv.setUint32(12, flags % TWO32, true);
  bv.setUint16(16, wanted.maxBackground ?? 0, true);
  bv.setUint16(18, wanted.congestionThreshold ?? 0, true);
  bv.setUint32(20, maxWrite, true);
  bv.setUint32(24, wanted.timeGran ?? 1, true);
  if (hasFlag(flags, FUSE_MAX_PAGES)) bv.setUint16(28, maxPages, true);
  if (ext) bv.setUint32(32, Math.floor(flags / TWO32), true);
  return {
    reply: initReply(unique, body.subarray(0, size)),
    minor,
    flags,
    maxWrite,
    maxPages,
    maxReadahead,
    readBufferSize: readBufferSize(maxWrite),
  };
}

/**
 * Buffer size for reads of /dev/fuse: the biggest WRITE or SETXATTR plus room for headers (the
 * kernel fails a read into a smaller buffer with EINVAL, or the request with EIO).
 */
export function readBufferSize(maxWrite: number): number {
  return Math.max(FUSE_MIN_READ_BUFFER, Math.max(maxWrite, XATTR_SIZE_MAX) + PAGE_SIZE);
}
