/**
 * The FUSE kernel protocol codec against buffers built by hand at the sizes linux/fuse.h gives
 * (the sizes are literals here on purpose: a layout change in the codec must break a test).
 * 64-bit fields are written and read with BigInt here, independently of the codec's lo/hi split.
 */
import test from 'ava';
import {
  Attr,
  decodeHeader,
  decodeRequest,
  DirentWriter,
  expectsReply,
  DT_DIR,
  DT_LNK,
  DT_REG,
  encodeAttrOut,
  encodeEntryOut,
  encodeLseekOut,
  encodeNegativeEntryOut,
  encodeNotifyDelete,
  encodeNotifyInvalEntry,
  encodeNotifyInvalInode,
  encodeOpenOut,
  encodeStatfsOut,
  encodeWriteOut,
  encodeXattrSize,
  FATTR_ATIME,
  FATTR_ATIME_NOW,
  FATTR_CTIME,
  FATTR_FH,
  FATTR_GID,
  FATTR_KILL_SUIDGID,
  FATTR_LOCKOWNER,
  FATTR_MODE,
  FATTR_MTIME,
  FATTR_SIZE,
  FATTR_UID,
  flagsAnd,
  flagsOr,
  FOPEN_DIRECT_IO,
  FOPEN_KEEP_CACHE,
  FUSE_ASYNC_READ,
  FUSE_BIG_WRITES,
  FUSE_DO_READDIRPLUS,
  FUSE_EXPIRE_ONLY,
  FUSE_GETATTR_FH,
  FUSE_HAS_EXPIRE_ONLY,
  FUSE_INIT_EXT,
  FUSE_MAX_PAGES,
  FUSE_PARALLEL_DIROPS,
  FUSE_READ_LOCKOWNER,
  FUSE_RELEASE_FLUSH,
  FUSE_SECURITY_CTX,
  FUSE_SETXATTR_EXT,
  FUSE_WRITE_CACHE,
  FUSE_WRITE_LOCKOWNER,
  FUSE_WRITEBACK_CACHE,
  hasFlag,
  InitAccepted,
  InitRequest,
  InitResult,
  InitWanted,
  modeToDirentType,
  negotiateInit,
  Op,
  opName,
  ProtocolError,
  readBufferSize,
  RENAME_EXCHANGE,
  RENAME_NOREPLACE,
  replyError,
  replyOk,
  ReplyEncodingError,
  Request,
} from '../src/fuse/kernel/protocol';

const S = { minor: 38, setxattrExt: false };

// --- building requests ---

interface HeaderOpts {
  unique?: bigint;
  nodeid?: bigint;
  uid?: number;
  gid?: number;
  pid?: number;
  /** Extension bytes appended after the body (a multiple of 8); total_extlen is set from it. */
  ext?: Buffer;
  /** Overrides the header's len field (for mismatch tests). */
  len?: number;
}

function request(opcode: number, parts: Array<Buffer | string>, o: HeaderOpts = {}): Buffer {
  const body = Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : p)));
  const ext = o.ext ?? Buffer.alloc(0);
  const h = Buffer.alloc(40);
  const total = 40 + body.length + ext.length;
  h.writeUInt32LE(o.len ?? total, 0);
  h.writeUInt32LE(opcode, 4);
  h.writeBigUInt64LE(o.unique ?? 77n, 8);
  h.writeBigUInt64LE(o.nodeid ?? 5n, 16);
  h.writeUInt32LE(o.uid ?? 1000, 24);
  h.writeUInt32LE(o.gid ?? 1001, 28);
  h.writeUInt32LE(o.pid ?? 4242, 32);
  h.writeUInt16LE(ext.length / 8, 36);
  h.writeUInt16LE(0, 38);
  return Buffer.concat([h, body, ext]);
}

/** A struct of `size` bytes from [offset, kind, value] fields; everything else zero. */
function struct(size: number, fields: Array<[number, 'u16' | 'u32' | 'i32' | 'u64' | 'i64', number | bigint]>): Buffer {
  const b = Buffer.alloc(size);
  for (const [off, kind, v] of fields) {
    if (kind === 'u16') b.writeUInt16LE(Number(v), off);
    else if (kind === 'u32') b.writeUInt32LE(Number(v), off);
    else if (kind === 'i32') b.writeInt32LE(Number(v), off);
    else if (kind === 'u64') b.writeBigUInt64LE(BigInt(v), off);
    else b.writeBigInt64LE(BigInt(v), off);
  }
  return b;
}

const z = (s: string): string => s + '\0';

function decode(buf: Buffer, session = S): Request {
  return decodeRequest(buf, session);
}

function as<K extends Request['kind']>(r: Request, kind: K): Extract<Request, { kind: K }> {
  if (r.kind !== kind) throw new Error(`expected ${kind}, got ${r.kind}`);
  return r as Extract<Request, { kind: K }>;
}

/** Concatenates a reply's pieces, checking the header's len equals the bytes. */
function wire(pieces: Buffer[] | Buffer): Buffer {
  const all = Buffer.concat(Array.isArray(pieces) ? pieces : [pieces]);
  if (all.readUInt32LE(0) !== all.length) throw new Error(`header len ${all.readUInt32LE(0)} != ${all.length} bytes`);
  return all;
}

// --- header ---

test('fuse_in_header is 40 bytes: every field, total_extlen included', (t) => {
  const buf = request(Op.GETATTR, [Buffer.alloc(16)], { unique: 2n ** 52n + 3n, nodeid: 2n ** 40n + 1n, uid: 65534, gid: 4294967295, pid: 99, ext: Buffer.alloc(16) });
  t.is(buf.length, 40 + 16 + 16);
  t.deepEqual(decodeHeader(buf), { len: 72, opcode: 3, unique: 2 ** 52 + 3, nodeid: 2 ** 40 + 1, uid: 65534, gid: 4294967295, pid: 99, extlen: 2 });
});

test('an identifier above 2**53 is a ProtocolError, never a different number', (t) => {
  const e = t.throws(() => decodeHeader(request(Op.GETATTR, [Buffer.alloc(16)], { unique: 2n ** 53n + 1n })), { instanceOf: ProtocolError });
  t.regex(e.message, /GETATTR.*unique/);
  // No unique to answer: the rounded one would name a different request.
  t.is(e.unique, undefined);
  t.throws(() => decodeHeader(request(Op.GETATTR, [Buffer.alloc(16)], { nodeid: 2n ** 60n })), { instanceOf: ProtocolError, message: /nodeid/ });
  // The largest exact one still decodes.
  t.is(decodeHeader(request(Op.GETATTR, [Buffer.alloc(16)], { nodeid: 2n ** 53n - 1n })).nodeid, Number.MAX_SAFE_INTEGER);
});

test('opcodes match linux/fuse.h and have names', (t) => {
  t.is(Op.LOOKUP, 1);
  t.is(Op.MKNOD, 8);
  t.is(Op.FSYNC, 20);
  t.is(Op.INIT, 26);
  t.is(Op.BATCH_FORGET, 42);
  t.is(Op.RENAME2, 45);
  t.is(Op.SYNCFS, 50);
  t.is(Op.TMPFILE, 51);
  t.is(Op.STATX, 52);
  t.is(opName(Op.READDIRPLUS), 'READDIRPLUS');
  t.is(opName(7), 'OP_7');
  t.is(opName(4096), 'OP_4096');
});

test('expectsReply: never for FORGET, BATCH_FORGET, NOTIFY_REPLY; optional for INTERRUPT', (t) => {
  t.deepEqual(
    [Op.FORGET, Op.BATCH_FORGET, Op.NOTIFY_REPLY, Op.INTERRUPT].map(expectsReply),
    [false, false, false, false],
  );
  t.deepEqual([Op.LOOKUP, Op.INIT, Op.DESTROY, Op.STATX, 9999].map(expectsReply), [true, true, true, true, true]);
});

// --- requests with names ---

test('LOOKUP: the name without NUL, a view of the request; non-UTF-8 bytes survive', (t) => {
  const raw = Buffer.from([0x66, 0xff, 0xfe, 0x80, 0xc3, 0x28]);
  const buf = request(Op.LOOKUP, [raw, Buffer.from([0])], { nodeid: 1n });
  const r = as(decode(buf), 'lookup');
  t.is(r.h.nodeid, 1);
  t.deepEqual(r.name, raw);
  t.is(r.name.buffer, buf.buffer);
  t.is(r.name.byteOffset, buf.byteOffset + 40);
  // A string round trip would have replaced the invalid bytes.
  t.notDeepEqual(Buffer.from(raw.toString('utf8')), raw);
});

test('UNLINK, RMDIR, REMOVEXATTR: a name each', (t) => {
  t.deepEqual(as(decode(request(Op.UNLINK, [z('a.txt')])), 'unlink').name, Buffer.from('a.txt'));
  t.deepEqual(as(decode(request(Op.RMDIR, [z('d')])), 'rmdir').name, Buffer.from('d'));
  t.deepEqual(as(decode(request(Op.REMOVEXATTR, [z('user.x')])), 'removexattr').name, Buffer.from('user.x'));
});

test('SYMLINK: name then target, both NUL-terminated; the target may hold /', (t) => {
  const r = as(decode(request(Op.SYMLINK, [z('ln'), z('../a/b')])), 'symlink');
  t.deepEqual(r.name, Buffer.from('ln'));
  t.deepEqual(r.target, Buffer.from('../a/b'));
});

test('MKNOD: fuse_mknod_in 16 bytes (8 before 7.12)', (t) => {
  const r = as(decode(request(Op.MKNOD, [struct(16, [[0, 'u32', 0o10644], [4, 'u32', 0x0801], [8, 'u32', 0o022]]), z('fifo')])), 'mknod');
  t.like(r, { mode: 0o10644, rdev: 0x0801, umask: 0o022 });
  t.deepEqual(r.name, Buffer.from('fifo'));
  const old = as(decode(request(Op.MKNOD, [struct(8, [[0, 'u32', 0o100600], [4, 'u32', 0]]), z('f')]), { minor: 11, setxattrExt: false }), 'mknod');
  t.like(old, { mode: 0o100600, rdev: 0, umask: 0 });
  t.deepEqual(old.name, Buffer.from('f'));
});

test('MKDIR: fuse_mkdir_in 8 bytes', (t) => {
  const r = as(decode(request(Op.MKDIR, [struct(8, [[0, 'u32', 0o755], [4, 'u32', 0o027]]), z('dir')])), 'mkdir');
  t.like(r, { mode: 0o755, umask: 0o027 });
  t.deepEqual(r.name, Buffer.from('dir'));
});

test('RENAME: fuse_rename_in 8 bytes, flags 0; RENAME2: fuse_rename2_in 16 bytes with flags', (t) => {
  const r = as(decode(request(Op.RENAME, [struct(8, [[0, 'u64', 9]]), z('old'), z('new')], { nodeid: 3n })), 'rename');
  t.like(r, { newdir: 9, flags: 0 });
  t.is(r.h.nodeid, 3);
  t.deepEqual([r.oldName, r.newName], [Buffer.from('old'), Buffer.from('new')]);
  const r2 = as(decode(request(Op.RENAME2, [struct(16, [[0, 'u64', 2n ** 33n], [8, 'u32', RENAME_EXCHANGE]]), z('x'), z('y')])), 'rename');
  t.like(r2, { newdir: 2 ** 33, flags: RENAME_EXCHANGE });
  t.deepEqual([r2.oldName, r2.newName], [Buffer.from('x'), Buffer.from('y')]);
  t.is(RENAME_NOREPLACE, 1);
});

test('LINK: fuse_link_in 8 bytes', (t) => {
  const r = as(decode(request(Op.LINK, [struct(8, [[0, 'u64', 12]]), z('hard')], { nodeid: 4n })), 'link');
  t.like(r, { oldnodeid: 12 });
  t.is(r.h.nodeid, 4);
  t.deepEqual(r.name, Buffer.from('hard'));
});

test('CREATE: fuse_create_in 16 bytes (8 before 7.12)', (t) => {
  const r = as(decode(request(Op.CREATE, [struct(16, [[0, 'u32', 0o1101], [4, 'u32', 0o100644], [8, 'u32', 0o022], [12, 'u32', 1]]), z('new')])), 'create');
  t.like(r, { flags: 0o1101, mode: 0o100644, umask: 0o022, openFlags: 1 });
  t.deepEqual(r.name, Buffer.from('new'));
  const old = as(decode(request(Op.CREATE, [struct(8, [[0, 'u32', 2], [4, 'u32', 0o100600]]), z('n')]), { minor: 11, setxattrExt: false }), 'create');
  t.like(old, { flags: 2, mode: 0o100600, umask: 0, openFlags: 0 });
});

test('a request with extensions (total_extlen) decodes its body up to len - extlen*8', (t) => {
  // A security context extension as FUSE_SECURITY_CTX would send it: 32 bytes after the name.
  const ext = struct(32, [[0, 'u32', 32], [4, 'u32', 1]]);
  const r = as(decode(request(Op.MKDIR, [struct(8, [[0, 'u32', 0o700], [4, 'u32', 0]]), z('d')], { ext })), 'mkdir');
  t.is(r.h.extlen, 4);
  t.deepEqual(r.name, Buffer.from('d'));
  const w = as(decode(request(Op.WRITE, [struct(40, [[16, 'u32', 3]]), 'abc'], { ext: Buffer.alloc(8, 0xee) })), 'write');
  t.deepEqual(w.data, Buffer.from('abc'));
  t.throws(() => decode(request(Op.MKDIR, [struct(8, []), z('d')], { ext: Buffer.alloc(24) }).fill(0xff, 36, 37)), {
    instanceOf: ProtocolError,
    message: /MKDIR.*extensions/,
  });
});

// --- fixed-size requests ---

test('FORGET: fuse_forget_in 8 bytes; BATCH_FORGET: 8 + 16 per item', (t) => {
  const f = as(decode(request(Op.FORGET, [struct(8, [[0, 'u64', 2n ** 40n]])], { nodeid: 8n })), 'forget');
  t.is(f.nlookup, 2 ** 40);
  t.is(f.h.nodeid, 8);
  const items = [struct(16, [[0, 'u64', 10], [8, 'u64', 1]]), struct(16, [[0, 'u64', 11], [8, 'u64', 3]])];
  const b = as(decode(request(Op.BATCH_FORGET, [struct(8, [[0, 'u32', 2]]), ...items])), 'batchForget');
  t.deepEqual(b.items, [
    { nodeid: 10, nlookup: 1 },
    { nodeid: 11, nlookup: 3 },
  ]);
  t.throws(() => decode(request(Op.BATCH_FORGET, [struct(8, [[0, 'u32', 3]]), ...items])), { instanceOf: ProtocolError, message: /BATCH_FORGET.*count 3/ });
});

test('GETATTR: fuse_getattr_in 16 bytes; fh only with FUSE_GETATTR_FH; empty before 7.9', (t) => {
  t.deepEqual(as(decode(request(Op.GETATTR, [struct(16, [[8, 'u64', 99]])])), 'getattr').fh, undefined);
  t.false('fh' in as(decode(request(Op.GETATTR, [struct(16, [[8, 'u64', 99]])])), 'getattr'));
  t.is(as(decode(request(Op.GETATTR, [struct(16, [[0, 'u32', FUSE_GETATTR_FH], [8, 'u64', 99]])])), 'getattr').fh, 99);
  t.is(as(decode(request(Op.GETATTR, []), { minor: 8, setxattrExt: false }), 'getattr').kind, 'getattr');
});

test('SETATTR: fuse_setattr_in 88 bytes, every field at its offset, negative times', (t) => {
  const all = FATTR_MODE | FATTR_UID | FATTR_GID | FATTR_SIZE | FATTR_ATIME | FATTR_MTIME | FATTR_FH | FATTR_LOCKOWNER | FATTR_CTIME | FATTR_KILL_SUIDGID;
  const body = struct(88, [
    [0, 'u32', all],
    [8, 'u64', 17],
    [16, 'u64', 2n ** 40n + 5n],
    [24, 'u64', 0xabcdefn],
    [32, 'i64', -1],
    [40, 'i64', -(2n ** 33n) - 7n],
    [48, 'i64', 1700000000],
    [56, 'u32', 999999999],
    [60, 'u32', 1],
    [64, 'u32', 500],
    [68, 'u32', 0o104755],
    [76, 'u32', 65534],
    [80, 'u32', 1000],
  ]);
  const r = as(decode(request(Op.SETATTR, [body])), 'setattr');
  t.deepEqual(
    { ...r, h: undefined },
    {
      h: undefined,
      kind: 'setattr',
      valid: all,
      fh: 17,
      size: 2 ** 40 + 5,
      lockOwner: 0xabcdef,
      atime: { sec: -1, nsec: 999999999 },
      mtime: { sec: -(2 ** 33) - 7, nsec: 1 },
      ctime: { sec: 1700000000, nsec: 500 },
      atimeNow: false,
      mtimeNow: false,
      killSuidgid: true,
      mode: 0o104755,
      uid: 65534,
      gid: 1000,
    },
  );
  // Only the fields whose bits are set are present.
  const some = as(decode(request(Op.SETATTR, [struct(88, [[0, 'u32', FATTR_SIZE | FATTR_ATIME | FATTR_ATIME_NOW], [16, 'u64', 0], [32, 'i64', 5]])])), 'setattr');
  t.deepEqual(Object.keys(some).sort(), ['atime', 'atimeNow', 'h', 'killSuidgid', 'kind', 'mtimeNow', 'size', 'valid']);
  t.like(some, { size: 0, atime: { sec: 5, nsec: 0 }, atimeNow: true, mtimeNow: false });
});

test('empty-bodied requests: READLINK, STATFS, DESTROY', (t) => {
  t.is(decode(request(Op.READLINK, [])).kind, 'readlink');
  t.is(decode(request(Op.STATFS, [])).kind, 'statfs');
  t.is(decode(request(Op.DESTROY, [])).kind, 'destroy');
  t.throws(() => decode(request(Op.STATFS, [Buffer.alloc(8)])), { instanceOf: ProtocolError, message: /STATFS.*8 unexpected bytes/ });
});

test('OPEN and OPENDIR: fuse_open_in 8 bytes', (t) => {
  t.like(decode(request(Op.OPEN, [struct(8, [[0, 'u32', 0o100002], [4, 'u32', 1]])])), { kind: 'open', flags: 0o100002, openFlags: 1 });
  t.like(decode(request(Op.OPENDIR, [struct(8, [[0, 'u32', 0o200000]])])), { kind: 'opendir', flags: 0o200000, openFlags: 0 });
});

test('READ, READDIR, READDIRPLUS: fuse_read_in 40 bytes (24 before 7.9); huge offsets', (t) => {
  const body = struct(40, [[0, 'u64', 3], [8, 'u64', 2n ** 62n], [16, 'u32', 131072], [20, 'u32', FUSE_READ_LOCKOWNER], [24, 'u64', 0x55], [32, 'u32', 0o2]]);
  t.deepEqual({ ...as(decode(request(Op.READ, [body])), 'read'), h: undefined }, {
    h: undefined,
    kind: 'read',
    fh: 3,
    offset: 2 ** 62,
    size: 131072,
    readFlags: FUSE_READ_LOCKOWNER,
    flags: 0o2,
    lockOwner: 0x55,
  });
  // offset 2**63 - 1 (the largest loff_t) comes out as the nearest double, not negative.
  const top = as(decode(request(Op.READ, [struct(40, [[8, 'u64', 2n ** 63n - 1n]])])), 'read');
  t.is(top.offset, 2 ** 63);
  t.false('lockOwner' in top);
  t.like(decode(request(Op.READDIR, [body])), { kind: 'readdir', fh: 3, offset: 2 ** 62, size: 131072 });
  t.like(decode(request(Op.READDIRPLUS, [body])), { kind: 'readdirplus', fh: 3, offset: 2 ** 62, size: 131072 });
  const old = as(decode(request(Op.READ, [body.subarray(0, 24)]), { minor: 8, setxattrExt: false }), 'read');
  t.like(old, { fh: 3, size: 131072, flags: 0 });
  t.throws(() => decode(request(Op.READ, [body.subarray(0, 24)])), { instanceOf: ProtocolError, message: /READ.*fuse_read_in needs 40/ });
});

test('WRITE: fuse_write_in 40 bytes (24 before 7.9), then exactly size bytes of data, as a view', (t) => {
  const data = Buffer.from([0, 1, 2, 0xff, 0]);
  const head = struct(40, [[0, 'u64', 7], [8, 'u64', 4096], [16, 'u32', 5], [20, 'u32', FUSE_WRITE_CACHE | FUSE_WRITE_LOCKOWNER], [24, 'u64', 9], [32, 'u32', 0o100001]]);
  const buf = request(Op.WRITE, [head, data]);
  const w = as(decode(buf), 'write');
  t.like(w, { fh: 7, offset: 4096, size: 5, writeFlags: FUSE_WRITE_CACHE | FUSE_WRITE_LOCKOWNER, flags: 0o100001, lockOwner: 9 });
  t.deepEqual(w.data, data);
  t.is(w.data.buffer, buf.buffer);
  t.is(w.data.byteOffset, buf.byteOffset + 80);
  const old = as(decode(request(Op.WRITE, [head.subarray(0, 24), data]), { minor: 8, setxattrExt: false }), 'write');
  t.like(old, { fh: 7, offset: 4096, size: 5, flags: 0 });
  t.deepEqual(old.data, data);
  t.throws(() => decode(request(Op.WRITE, [head, data.subarray(0, 4)])), { instanceOf: ProtocolError, message: /WRITE.*size field says 5.*4/ });
});

test('RELEASE and RELEASEDIR: fuse_release_in 24 bytes', (t) => {
  const body = struct(24, [[0, 'u64', 42], [8, 'u32', 0o2], [12, 'u32', FUSE_RELEASE_FLUSH], [16, 'u64', 0x1234]]);
  t.like(decode(request(Op.RELEASE, [body])), { kind: 'release', fh: 42, flags: 0o2, releaseFlags: FUSE_RELEASE_FLUSH, lockOwner: 0x1234 });
  t.like(decode(request(Op.RELEASEDIR, [body])), { kind: 'releasedir', fh: 42, flags: 0o2, releaseFlags: FUSE_RELEASE_FLUSH, lockOwner: 0x1234 });
});

test('FSYNC and FSYNCDIR: fuse_fsync_in 16 bytes, FDATASYNC bit', (t) => {
  t.like(decode(request(Op.FSYNC, [struct(16, [[0, 'u64', 6], [8, 'u32', 1]])])), { kind: 'fsync', fh: 6, datasync: true });
  t.like(decode(request(Op.FSYNC, [struct(16, [[0, 'u64', 6]])])), { kind: 'fsync', fh: 6, datasync: false });
  t.like(decode(request(Op.FSYNCDIR, [struct(16, [[0, 'u64', 2], [8, 'u32', 1]])])), { kind: 'fsyncdir', fh: 2, datasync: true });
});

test('SETXATTR: fuse_setxattr_in 8 bytes, or 16 with SETXATTR_EXT; name, then size bytes of value', (t) => {
  const value = Buffer.from([0, 0xff, 0, 7]);
  const r = as(decode(request(Op.SETXATTR, [struct(8, [[0, 'u32', 4], [4, 'u32', 1]]), z('user.k'), value])), 'setxattr');
  t.like(r, { flags: 1, setxattrFlags: 0 });
  t.deepEqual([r.name, r.value], [Buffer.from('user.k'), value]);
  const ext = { minor: 38, setxattrExt: true };
  const e = as(decode(request(Op.SETXATTR, [struct(16, [[0, 'u32', 4], [4, 'u32', 2], [8, 'u32', 1]]), z('user.k'), value]), ext), 'setxattr');
  t.like(e, { flags: 2, setxattrFlags: 1 });
  t.deepEqual([e.name, e.value], [Buffer.from('user.k'), value]);
  // Decoding a 16-byte struct as the 8-byte one does not silently produce a wrong name.
  t.throws(() => decode(request(Op.SETXATTR, [struct(16, [[0, 'u32', 4], [4, 'u32', 2], [8, 'u32', 1]]), z('user.k'), value])), { instanceOf: ProtocolError });
  t.throws(() => decode(request(Op.SETXATTR, [struct(8, [[0, 'u32', 9]]), z('user.k'), value])), { instanceOf: ProtocolError, message: /SETXATTR.*size field says 9/ });
});

test('GETXATTR: fuse_getxattr_in 8 bytes + name; LISTXATTR: 8 bytes', (t) => {
  const g = as(decode(request(Op.GETXATTR, [struct(8, [[0, 'u32', 0]]), z('security.capability')])), 'getxattr');
  t.is(g.size, 0);
  t.deepEqual(g.name, Buffer.from('security.capability'));
  t.like(decode(request(Op.LISTXATTR, [struct(8, [[0, 'u32', 4096]])])), { kind: 'listxattr', size: 4096 });
});

test('FLUSH: fuse_flush_in 24 bytes', (t) => {
  t.like(decode(request(Op.FLUSH, [struct(24, [[0, 'u64', 8], [16, 'u64', 2n ** 50n]])])), { kind: 'flush', fh: 8, lockOwner: 2 ** 50 });
});

test('ACCESS 8, INTERRUPT 8, FALLOCATE 32, LSEEK 24, SYNCFS 8, STATX 24, COPY_FILE_RANGE 56', (t) => {
  t.like(decode(request(Op.ACCESS, [struct(8, [[0, 'u32', 6]])])), { kind: 'access', mask: 6 });
  t.like(decode(request(Op.INTERRUPT, [struct(8, [[0, 'u64', 1234]])], { unique: 1235n })), { kind: 'interrupt', target: 1234 });
  t.like(decode(request(Op.FALLOCATE, [struct(32, [[0, 'u64', 4], [8, 'u64', 100], [16, 'u64', 2n ** 36n], [24, 'u32', 1]])])), {
    kind: 'fallocate',
    fh: 4,
    offset: 100,
    length: 2 ** 36,
    mode: 1,
  });
  t.like(decode(request(Op.LSEEK, [struct(24, [[0, 'u64', 4], [8, 'u64', 65536], [16, 'u32', 3]])])), { kind: 'lseek', fh: 4, offset: 65536, whence: 3 });
  t.is(decode(request(Op.SYNCFS, [Buffer.alloc(8)])).kind, 'syncfs');
  const sx = as(decode(request(Op.STATX, [struct(24, [[0, 'u32', FUSE_GETATTR_FH], [8, 'u64', 5], [16, 'u32', 0x800], [20, 'u32', 0xfff]])])), 'statx');
  t.like(sx, { getattrFlags: FUSE_GETATTR_FH, fh: 5, sxFlags: 0x800, sxMask: 0xfff });
  const c = decode(request(Op.COPY_FILE_RANGE, [struct(56, [[0, 'u64', 1], [8, 'u64', 2], [16, 'u64', 3], [24, 'u64', 4], [32, 'u64', 5], [40, 'u64', 6], [48, 'u64', 0]])]));
  t.like(c, { kind: 'copyFileRange', fhIn: 1, offIn: 2, nodeidOut: 3, fhOut: 4, offOut: 5, len: 6, flags: 0 });
});

test('an opcode without a variant decodes as unknown (GETLK, IOCTL, TMPFILE, 9999)', (t) => {
  for (const op of [Op.GETLK, Op.IOCTL, Op.BMAP, Op.TMPFILE, 7, 9999]) {
    const r = decode(request(op, [Buffer.alloc(13)], { unique: 900n }));
    t.is(r.kind, 'unknown');
    t.is(r.h.opcode, op);
    t.is(r.h.unique, 900);
  }
});

// --- malformed requests ---

test('malformed requests throw ProtocolError naming the opcode and unique', (t) => {
  const cases: Array<[string, Buffer, RegExp]> = [
    ['short header', Buffer.alloc(39), /shorter than the 40-byte header/],
    ['len larger than read', request(Op.LOOKUP, [z('a')], { len: 100 }), /LOOKUP.*header says 100 bytes, read 42/],
    ['len smaller than read', request(Op.LOOKUP, [z('a')], { len: 41 }), /LOOKUP.*header says 41/],
    ['short body', request(Op.MKDIR, [Buffer.alloc(4)]), /MKDIR request \(unique 77\).*fuse_mkdir_in needs 8/],
    ['short fallocate', request(Op.FALLOCATE, [Buffer.alloc(31)]), /FALLOCATE.*needs 32/],
    ['name without NUL', request(Op.LOOKUP, ['abc']), /LOOKUP.*name has no terminating NUL/],
    ['second name without NUL', request(Op.RENAME, [Buffer.alloc(8), z('a'), 'b']), /RENAME.*new name has no terminating NUL/],
    ['NUL only in the extensions', request(Op.LOOKUP, ['abc'], { ext: Buffer.alloc(8) }), /LOOKUP.*no terminating NUL/],
    ['empty name', request(Op.UNLINK, [z('')]), /UNLINK.*name is empty/],
    ['name with a slash', request(Op.LOOKUP, [z('../etc')]), /LOOKUP.*contains '\/'/],
    ['bytes after the name', request(Op.LOOKUP, [z('a'), 'x']), /LOOKUP.*1 unexpected bytes/],
    ['short INIT', request(Op.INIT, [Buffer.alloc(4)]), /INIT.*fuse_init_in needs 8/],
    ['short interrupt', request(Op.INTERRUPT, [Buffer.alloc(4)]), /INTERRUPT/],
  ];
  for (const [what, buf, message] of cases) {
    const e = t.throws(() => decode(buf), { instanceOf: ProtocolError }, what);
    t.regex(e.message, message, what);
    if (buf.length >= 40) t.like(e, { opcode: buf.readUInt32LE(4), unique: 77 }, what);
  }
});

// --- replies ---

const ATTR: Attr = {
  ino: 2 ** 40 + 9,
  size: 2 ** 45 + 1,
  blocks: 123,
  atime: -1,
  atimensec: 1,
  mtime: -(2 ** 33) - 5,
  mtimensec: 999999999,
  ctime: 1700000000,
  ctimensec: 42,
  mode: 0o100644,
  nlink: 3,
  uid: 1000,
  gid: 65534,
  rdev: 0x0801,
  blksize: 4096,
};

/** Checks the 88-byte fuse_attr at off (80 bytes when compat). */
function checkAttr(t: { is: (a: unknown, b: unknown, m?: string) => void }, b: Buffer, off: number, a: Attr, compat = false): void {
  t.is(b.readBigUInt64LE(off), BigInt(a.ino), 'ino');
  t.is(b.readBigUInt64LE(off + 8), BigInt(a.size), 'size');
  t.is(b.readBigUInt64LE(off + 16), BigInt(a.blocks), 'blocks');
  t.is(b.readBigInt64LE(off + 24), BigInt(a.atime), 'atime');
  t.is(b.readBigInt64LE(off + 32), BigInt(a.mtime), 'mtime');
  t.is(b.readBigInt64LE(off + 40), BigInt(a.ctime), 'ctime');
  t.is(b.readUInt32LE(off + 48), a.atimensec, 'atimensec');
  t.is(b.readUInt32LE(off + 52), a.mtimensec, 'mtimensec');
  t.is(b.readUInt32LE(off + 56), a.ctimensec, 'ctimensec');
  t.is(b.readUInt32LE(off + 60), a.mode, 'mode');
  t.is(b.readUInt32LE(off + 64), a.nlink, 'nlink');
  t.is(b.readUInt32LE(off + 68), a.uid, 'uid');
  t.is(b.readUInt32LE(off + 72), a.gid, 'gid');
  t.is(b.readUInt32LE(off + 76), a.rdev, 'rdev');
  if (!compat) {
    t.is(b.readUInt32LE(off + 80), a.blksize, 'blksize');
    t.is(b.readUInt32LE(off + 84), a.flags ?? 0, 'flags');
  }
}

test('replyOk: fuse_out_header 16 bytes, len = all pieces, error 0; replyError: -errno', (t) => {
  const empty = wire(replyOk(2 ** 50 + 1));
  t.is(empty.length, 16);
  t.is(empty.readInt32LE(4), 0);
  t.is(empty.readBigUInt64LE(8), 2n ** 50n + 1n);
  const one = wire(replyOk(5, Buffer.from('target')));
  t.is(one.length, 22);
  t.is(one.subarray(16).toString(), 'target');
  const many = wire(replyOk(5, [Buffer.alloc(128, 1), Buffer.alloc(16, 2)]));
  t.is(many.length, 16 + 128 + 16);
  for (const errno of [2, -2]) {
    const e = wire(replyError(9, errno));
    t.is(e.length, 16);
    t.is(e.readInt32LE(4), -2);
    t.is(e.readBigUInt64LE(8), 9n);
  }
  t.throws(() => replyError(1, 0), { instanceOf: ReplyEncodingError });
  t.throws(() => replyError(1, 512), { instanceOf: ReplyEncodingError });
});

test('fuse_entry_out: 128 bytes, field by field; fractional timeouts; 120 bytes before 7.9', (t) => {
  const b = encodeEntryOut({ nodeid: 2 ** 52, generation: 7, entryValid: 1.5, attrValid: 0.25, attr: { ...ATTR, flags: 2 } });
  t.is(b.length, 128);
  t.is(b.readBigUInt64LE(0), 2n ** 52n);
  t.is(b.readBigUInt64LE(8), 7n);
  t.is(b.readBigUInt64LE(16), 1n);
  t.is(b.readBigUInt64LE(24), 0n);
  t.is(b.readUInt32LE(32), 500000000);
  t.is(b.readUInt32LE(36), 250000000);
  checkAttr(t, b, 40, { ...ATTR, flags: 2 });
  const old = encodeEntryOut({ nodeid: 3, generation: 0, entryValid: 1, attrValid: 1, attr: ATTR }, 8);
  t.is(old.length, 120);
  checkAttr(t, old, 40, ATTR, true);
  // A timeout a hair below a whole second rounds into the seconds, never to 1e9 ns.
  const r = encodeEntryOut({ nodeid: 3, generation: 0, entryValid: 0.9999999999, attrValid: -4, attr: ATTR });
  t.is(r.readBigUInt64LE(16), 1n);
  t.is(r.readUInt32LE(32), 0);
  t.is(r.readBigUInt64LE(24), 0n);
  t.is(r.readUInt32LE(36), 0);
});

test('negative entry: nodeid 0 with an entry timeout, everything else zero', (t) => {
  const b = encodeNegativeEntryOut(2);
  t.is(b.length, 128);
  t.is(b.readBigUInt64LE(0), 0n);
  t.is(b.readBigUInt64LE(16), 2n);
  t.true(b.subarray(24).equals(Buffer.alloc(104)));
});

test('fuse_attr_out: 104 bytes (96 before 7.9)', (t) => {
  const b = encodeAttrOut(3.000000001, ATTR);
  t.is(b.length, 104);
  t.is(b.readBigUInt64LE(0), 3n);
  t.is(b.readUInt32LE(8), 1);
  t.is(b.readUInt32LE(12), 0);
  checkAttr(t, b, 16, ATTR);
  const old = encodeAttrOut(1, ATTR, 8);
  t.is(old.length, 96);
  checkAttr(t, old, 16, ATTR, true);
});

test('fuse_open_out 16, fuse_write_out 8, fuse_getxattr_out 8, fuse_lseek_out 8', (t) => {
  const o = encodeOpenOut(2 ** 40 + 3, FOPEN_DIRECT_IO | FOPEN_KEEP_CACHE);
  t.is(o.length, 16);
  t.is(o.readBigUInt64LE(0), 2n ** 40n + 3n);
  t.is(o.readUInt32LE(8), 3);
  t.is(o.readUInt32LE(12), 0);
  const w = encodeWriteOut(131072);
  t.deepEqual([w.length, w.readUInt32LE(0), w.readUInt32LE(4)], [8, 131072, 0]);
  const x = encodeXattrSize(17);
  t.deepEqual([x.length, x.readUInt32LE(0), x.readUInt32LE(4)], [8, 17, 0]);
  t.is(encodeLseekOut(2 ** 53 - 1).readBigUInt64LE(0), 2n ** 53n - 1n);
  // loff_t is signed: the largest offset is written as 2**63 - 1, never as 2**63 (negative).
  t.is(encodeLseekOut(2 ** 63).readBigUInt64LE(0), 2n ** 63n - 1n);
  t.is(encodeLseekOut(2 ** 64).readBigUInt64LE(0), 2n ** 63n - 1n);
  t.throws(() => encodeLseekOut(-1), { instanceOf: RangeError });
});

test('fuse_statfs_out: 80 bytes (48 before 7.4)', (t) => {
  const st = { blocks: 2 ** 40, bfree: 2 ** 39, bavail: 2 ** 38, files: 1000, ffree: 999, bsize: 4096, namelen: 255, frsize: 4096 };
  const b = encodeStatfsOut(st);
  t.is(b.length, 80);
  t.deepEqual(
    [b.readBigUInt64LE(0), b.readBigUInt64LE(8), b.readBigUInt64LE(16), b.readBigUInt64LE(24), b.readBigUInt64LE(32)],
    [2n ** 40n, 2n ** 39n, 2n ** 38n, 1000n, 999n],
  );
  t.deepEqual([b.readUInt32LE(40), b.readUInt32LE(44), b.readUInt32LE(48)], [4096, 255, 4096]);
  t.true(b.subarray(52).equals(Buffer.alloc(28)));
  t.is(encodeStatfsOut(st, 3).length, 48);
});

// --- directory entries ---

test('DirentWriter: fuse_dirent 24 + name, 8-byte aligned, zero padding, stops when full', (t) => {
  const w = new DirentWriter(64 + 39);
  t.true(w.add(10, 1, DT_REG, Buffer.from('a'))); // 25 -> 32
  t.true(w.add(11, 2, DT_DIR, Buffer.from('12345678'))); // 32 -> 32
  t.false(w.add(12, 3, DT_LNK, Buffer.from('123456789'))); // 33 -> 40: 39 left, nothing written
  const out = w.finish();
  t.is(out.length, 64);
  t.is(out.readBigUInt64LE(0), 10n);
  t.is(out.readBigUInt64LE(8), 1n);
  t.is(out.readUInt32LE(16), 1);
  t.is(out.readUInt32LE(20), DT_REG);
  t.is(out[24], 0x61);
  t.true(out.subarray(25, 32).equals(Buffer.alloc(7)));
  t.is(out.readBigUInt64LE(32), 11n);
  t.is(out.readUInt32LE(48), 8);
  t.is(out.readUInt32LE(52), DT_DIR);
  t.is(out.subarray(56, 64).toString(), '12345678');
  // Exactly filling the buffer fits; one byte more does not.
  const exact = new DirentWriter(40);
  t.true(exact.add(1, 1, DT_REG, Buffer.from('123456789abcdef0')));
  t.is(exact.finish().length, 40);
  t.false(new DirentWriter(39).add(1, 1, DT_REG, Buffer.from('123456789abcdef0')));
});

test('DirentWriter pads with zeros even over a dirty pooled buffer', (t) => {
  // Fill the allocator pool with garbage so that unzeroed padding would show.
  for (let i = 0; i < 64; i++) Buffer.allocUnsafe(64).fill(0xaa);
  const w = new DirentWriter(4096);
  const name = Buffer.from([0xff, 0x80, 0x01]);
  t.true(w.add(5, 9, DT_REG, name));
  const out = w.finish();
  t.is(out.length, 32);
  t.deepEqual(out.subarray(24, 27), name);
  t.true(out.subarray(27).equals(Buffer.alloc(5)));
});

test('DirentWriter.addPlus: fuse_direntplus 152 + name; null entry is zeros with the given ino', (t) => {
  const w = new DirentWriter(4096);
  const entry = { nodeid: 77, generation: 1, entryValid: 1, attrValid: 2, attr: ATTR };
  t.true(w.addPlus(entry, 1, DT_REG, Buffer.from('file')));
  t.true(w.addPlus(null, 2, DT_DIR, Buffer.from('..'), 1));
  const out = w.finish();
  t.is(out.length, 160 + 160); // 152 + 4 -> 160; 152 + 2 -> 160
  t.is(out.readBigUInt64LE(0), 77n);
  t.is(out.readBigUInt64LE(16), 1n);
  t.is(out.readBigUInt64LE(24), 2n);
  checkAttr(t, out, 40, ATTR);
  t.is(out.readBigUInt64LE(128), BigInt(ATTR.ino));
  t.is(out.readBigUInt64LE(136), 1n);
  t.is(out.readUInt32LE(144), 4);
  t.is(out.readUInt32LE(148), DT_REG);
  t.is(out.subarray(152, 156).toString(), 'file');
  t.true(out.subarray(156, 160).equals(Buffer.alloc(4)));
  t.true(out.subarray(160, 288).equals(Buffer.alloc(128)));
  t.is(out.readBigUInt64LE(288), 1n);
  t.is(out.readBigUInt64LE(296), 2n);
  t.is(out.readUInt32LE(304), 2);
  t.is(out.readUInt32LE(308), DT_DIR);
  t.false(new DirentWriter(159).addPlus(entry, 1, DT_REG, Buffer.from('file')));
});

test('DirentWriter.addPlus over a dirty pooled buffer: every byte as encodeEntryOut + fuse_dirent', (t) => {
  for (let i = 0; i < 64; i++) Buffer.allocUnsafe(64).fill(0xaa);
  const w = new DirentWriter(2 * 160);
  const entry = { nodeid: 77, generation: 3, entryValid: 1.25, attrValid: 2.5, attr: ATTR };
  t.true(w.addPlus(entry, 9, DT_REG, Buffer.from('abc')));
  t.true(w.addPlus(null, 10, DT_DIR, Buffer.from('.'), 5));
  const dirent = (ino: number, off: number, type: number, name: string): Buffer =>
    Buffer.concat([struct(24, [[0, 'u64', ino], [8, 'u64', off], [16, 'u32', name.length], [20, 'u32', type]]), Buffer.from(name), Buffer.alloc(8 - name.length)]);
  t.deepEqual(
    w.finish(),
    Buffer.concat([encodeEntryOut(entry), dirent(ATTR.ino, 9, DT_REG, 'abc'), Buffer.alloc(128), dirent(5, 10, DT_DIR, '.')]),
  );
});

test('DirentWriter refuses names the kernel would reject the whole reply for, and stays usable', (t) => {
  const w = new DirentWriter(8192);
  t.throws(() => w.add(1, 1, DT_REG, Buffer.alloc(0)), { instanceOf: ReplyEncodingError });
  t.throws(() => w.add(1, 1, DT_REG, Buffer.from('a/b')), { instanceOf: ReplyEncodingError });
  t.throws(() => w.add(1, 1, DT_REG, Buffer.from('a\0b')), { instanceOf: ReplyEncodingError });
  t.throws(() => w.addPlus(null, 1, DT_REG, Buffer.from('x/')), { instanceOf: ReplyEncodingError });
  t.throws(() => w.add(1, 1, DT_REG, Buffer.alloc(1025, 0x61)), { instanceOf: ReplyEncodingError });
  t.is(w.finish().length, 0);
  t.true(w.add(1, 1, DT_REG, Buffer.alloc(1024, 0x61)));
  t.is(w.finish().length, 24 + 1024);
});

test('modeToDirentType', (t) => {
  t.is(modeToDirentType(0o100644), DT_REG);
  t.is(modeToDirentType(0o040755), DT_DIR);
  t.is(modeToDirentType(0o120777), DT_LNK);
  t.is(modeToDirentType(0o010644), 1);
  t.is(modeToDirentType(0o140755), 12);
});

// --- notifications ---

test('notifications: unique 0, error = notify code, len = all bytes, names NUL-terminated', (t) => {
  const ii = wire(encodeNotifyInvalInode(2 ** 40, -1, 0));
  t.is(ii.length, 16 + 24);
  t.is(ii.readInt32LE(4), 2);
  t.is(ii.readBigUInt64LE(8), 0n);
  t.is(ii.readBigUInt64LE(16), 2n ** 40n);
  t.is(ii.readBigInt64LE(24), -1n);
  t.is(ii.readBigInt64LE(32), 0n);

  const name = Buffer.from([0xe9, 0x74, 0xe9]); // latin-1 "été", not UTF-8
  const ie = wire(encodeNotifyInvalEntry(1, name, FUSE_EXPIRE_ONLY));
  t.is(ie.length, 16 + 16 + 3 + 1);
  t.is(ie.readInt32LE(4), 3);
  t.is(ie.readBigUInt64LE(8), 0n);
  t.is(ie.readBigUInt64LE(16), 1n);
  t.is(ie.readUInt32LE(24), 3);
  t.is(ie.readUInt32LE(28), FUSE_EXPIRE_ONLY);
  t.deepEqual(ie.subarray(32, 35), name);
  t.is(ie[35], 0);
  t.is(wire(encodeNotifyInvalEntry(1, name)).readUInt32LE(28), 0);

  const d = wire(encodeNotifyDelete(1, 55, Buffer.from('gone')));
  t.is(d.length, 16 + 24 + 4 + 1);
  t.is(d.readInt32LE(4), 6);
  t.is(d.readBigUInt64LE(16), 1n);
  t.is(d.readBigUInt64LE(24), 55n);
  t.is(d.readUInt32LE(32), 4);
  t.is(d.readUInt32LE(36), 0);
  t.is(d.subarray(40).toString('latin1'), 'gone\0');
  t.throws(() => encodeNotifyDelete(1, 2, Buffer.alloc(0)), { instanceOf: ReplyEncodingError });
});

// --- INIT ---

/** fuse_init_in as a kernel of this minor sends it: 16 bytes before 7.36, 64 from then on. */
function initRequest(major: number, minor: number, flags: number, flags2: number, maxReadahead = 131072): InitRequest {
  const size = minor >= 36 ? 64 : 16;
  const body = struct(size, [
    [0, 'u32', major],
    [4, 'u32', minor],
    [8, 'u32', maxReadahead],
    [12, 'u32', flags],
  ]);
  if (size === 64) body.writeUInt32LE(flags2, 16);
  return as(decode(request(Op.INIT, [body], { unique: 2n, nodeid: 0n })), 'init');
}

interface InitOut {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
  maxBackground?: number;
  congestionThreshold?: number;
  maxWrite?: number;
  timeGran?: number;
  maxPages?: number;
  flags2?: number;
}

/** The reply message: header checked, body parsed by size. */
function initOut(r: InitResult): { size: number; out: InitOut } {
  if (!('reply' in r)) throw new Error('no reply');
  const m = wire(r.reply);
  t0(m.readInt32LE(4) === 0 && m.readBigUInt64LE(8) === 2n, 'header');
  const b = m.subarray(16);
  const out: InitOut = { major: b.readUInt32LE(0), minor: b.readUInt32LE(4), maxReadahead: 0, flags: 0 };
  if (b.length >= 24) {
    Object.assign(out, {
      maxReadahead: b.readUInt32LE(8),
      flags: b.readUInt32LE(12),
      maxBackground: b.readUInt16LE(16),
      congestionThreshold: b.readUInt16LE(18),
      maxWrite: b.readUInt32LE(20),
    });
  }
  if (b.length >= 64) Object.assign(out, { timeGran: b.readUInt32LE(24), maxPages: b.readUInt16LE(28), flags2: b.readUInt32LE(32) });
  return { size: b.length, out };
}

function t0(ok: boolean, what: string): void {
  if (!ok) throw new Error(what);
}

function accepted(r: InitResult): InitAccepted {
  if (!('minor' in r)) throw new Error(`not accepted: ${JSON.stringify(r)}`);
  return r;
}

const MiB = 1048576;
const WANT: InitWanted = {
  maxWrite: MiB,
  flags: FUSE_ASYNC_READ + FUSE_BIG_WRITES + FUSE_PARALLEL_DIROPS + FUSE_MAX_PAGES + FUSE_WRITEBACK_CACHE + FUSE_DO_READDIRPLUS + FUSE_HAS_EXPIRE_ONLY,
};

test('INIT from a 7.45 kernel (flags2, INIT_EXT, 64-byte fuse_init_in): we answer 7.38 in 64 bytes', (t) => {
  // The offer seen on kernel 6.18 (PERF-NOTES "Own transport").
  const req = initRequest(7, 45, 0x73fffffb, 0x5fd);
  t.is(req.h.len, 104);
  t.true(hasFlag(req.flags, FUSE_INIT_EXT));
  t.is(req.flagsLo, 0x73fffffb);
  t.is(req.flagsHi, 0x5fd);
  t.true(hasFlag(req.flags, FUSE_HAS_EXPIRE_ONLY));
  t.true(hasFlag(req.flags, FUSE_SECURITY_CTX));
  const r = accepted(negotiateInit(req, WANT));
  const { size, out } = initOut(r);
  t.is(size, 64);
  t.is(out.major, 7);
  t.is(out.minor, 38);
  t.is(r.minor, 38);
  // Granted: what we want and it offers, and INIT_EXT so that the kernel reads flags2.
  t.is(out.flags, (FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_PARALLEL_DIROPS | FUSE_MAX_PAGES | FUSE_WRITEBACK_CACHE | FUSE_DO_READDIRPLUS | FUSE_INIT_EXT) >>> 0);
  t.is(out.flags2, 1 << 3); // FUSE_HAS_EXPIRE_ONLY is bit 35
  t.false(hasFlag(r.flags, FUSE_SECURITY_CTX));
  t.is(r.flags, out.flags + out.flags2! * 2 ** 32);
  t.is(out.maxPages, 256);
  t.is(out.maxWrite, MiB);
  t.is(out.timeGran, 1);
  t.is(out.maxReadahead, 131072);
  t.is(out.maxBackground, 0);
  t.like(r, { maxWrite: MiB, maxPages: 256, maxReadahead: 131072 });
  t.true(r.readBufferSize >= MiB + 80);
  // Bytes past flags2 (max_stack_depth, 7.40+) stay zero at minor 38.
  t.true(r.reply.subarray(16 + 36).equals(Buffer.alloc(28)));
});

test('INIT: a flag not offered is not granted; max_write follows max_pages; read-ahead is capped', (t) => {
  // Offers no MAX_PAGES, no INIT_EXT: flags2 is neither read nor sent, max_pages stays 32.
  const req = initRequest(7, 45, FUSE_ASYNC_READ + FUSE_WRITEBACK_CACHE, 0xffffffff, 65536);
  t.is(req.flagsHi, 0);
  const r = accepted(negotiateInit(req, { ...WANT, maxReadahead: 1 << 20, maxBackground: 64, congestionThreshold: 48 }));
  const { out } = initOut(r);
  t.is(out.flags, FUSE_ASYNC_READ | FUSE_WRITEBACK_CACHE);
  t.is(out.flags2, 0);
  t.is(out.maxPages, 0);
  t.is(r.maxPages, 32);
  t.is(out.maxWrite, 32 * 4096);
  t.is(r.maxWrite, 32 * 4096);
  t.is(out.maxReadahead, 65536);
  t.is(out.maxBackground, 64);
  t.is(out.congestionThreshold, 48);
  // An explicit maxPages is honoured, and capped at 256.
  const mp = accepted(negotiateInit(initRequest(7, 38, FUSE_MAX_PAGES, 0), { maxWrite: MiB, maxPages: 1000, flags: FUSE_MAX_PAGES }));
  t.is(initOut(mp).out.maxPages, 256);
  const small = accepted(negotiateInit(initRequest(7, 38, FUSE_MAX_PAGES, 0), { maxWrite: MiB, maxPages: 64, flags: FUSE_MAX_PAGES }));
  t.like(small, { maxPages: 64, maxWrite: 64 * 4096 });
});

test('INIT from a 7.27 kernel: 64-byte reply, minor 27, no max_pages (7.28)', (t) => {
  const r = accepted(negotiateInit(initRequest(7, 27, 0x3fffff, 0), WANT));
  const { size, out } = initOut(r);
  t.is(size, 64);
  t.is(out.minor, 27);
  t.is(r.minor, 27);
  t.false(hasFlag(r.flags, FUSE_MAX_PAGES));
  t.is(out.maxWrite, 131072);
  t.is(out.flags2, 0);
});

test('INIT from a 7.22 kernel: the 24-byte compat reply', (t) => {
  const r = accepted(negotiateInit(initRequest(7, 22, FUSE_ASYNC_READ + FUSE_BIG_WRITES, 0), WANT));
  const { size, out } = initOut(r);
  t.is(size, 24);
  t.is(r.reply.length, 40);
  t.like(out, { major: 7, minor: 22, flags: FUSE_ASYNC_READ | FUSE_BIG_WRITES, maxWrite: 131072 });
});

test('INIT from a 7.8 kernel: 24-byte reply, minor 8 (and the session then uses old layouts)', (t) => {
  const r = accepted(negotiateInit(initRequest(7, 8, FUSE_ASYNC_READ, 0), WANT));
  const { size, out } = initOut(r);
  t.is(size, 24);
  t.like(out, { major: 7, minor: 8, flags: FUSE_ASYNC_READ });
  t.is(r.minor, 8);
});

test('INIT from a 7.4 kernel: the 8-byte reply', (t) => {
  const r = accepted(negotiateInit(initRequest(7, 4, 0, 0), WANT));
  t.is(initOut(r).size, 8);
  t.is(r.maxWrite, 4096);
});

test('INIT with another major: newer gets our version to retry with, older EPROTO', (t) => {
  const newer = negotiateInit(initRequest(8, 0, 0, 0), WANT);
  t.true('retry' in newer);
  const { size, out } = initOut(newer);
  t.is(size, 8);
  t.like(out, { major: 7, minor: 38 });
  t.deepEqual(negotiateInit(initRequest(6, 9, 0, 0), WANT), { error: 71 });
});

test('INIT flag arithmetic beyond 32 bits', (t) => {
  const a = FUSE_INIT_EXT + FUSE_HAS_EXPIRE_ONLY + FUSE_SECURITY_CTX + 1;
  t.is(flagsAnd(a, FUSE_HAS_EXPIRE_ONLY + 1), FUSE_HAS_EXPIRE_ONLY + 1);
  t.is(flagsOr(FUSE_SECURITY_CTX, FUSE_SETXATTR_EXT), 2 ** 32 + 2 ** 29);
  t.true(hasFlag(a, FUSE_SECURITY_CTX));
  t.false(hasFlag(a, FUSE_MAX_PAGES));
  t.is(readBufferSize(4096), 65536 + 4096);
});
