/**
 * FUSE requests built by hand, byte for byte as linux/fuse.h lays them out, and replies taken
 * apart the same way: an independent check of the session, not a second use of its codec.
 */

export interface Caller {
  uid?: number;
  gid?: number;
  pid?: number;
}

let nextUnique = 100;

/** fuse_in_header (40 bytes) + body. */
export function request(opcode: number, nodeid: number, body: Buffer = Buffer.alloc(0), caller: Caller = {}, unique = nextUnique++): Buffer {
  const h = Buffer.alloc(40);
  h.writeUInt32LE(40 + body.length, 0);
  h.writeUInt32LE(opcode, 4);
  h.writeBigUInt64LE(BigInt(unique), 8);
  h.writeBigUInt64LE(BigInt(nodeid), 16);
  h.writeUInt32LE(caller.uid ?? 0, 24);
  h.writeUInt32LE(caller.gid ?? 0, 28);
  h.writeUInt32LE(caller.pid ?? 1, 32);
  return Buffer.concat([h, body]);
}

export function cstr(name: string | Buffer): Buffer {
  return Buffer.concat([Buffer.from(name), Buffer.alloc(1)]);
}

/** fuse_init_in: 16 bytes before 7.36, 64 after (flags2 and unused words). */
export function initBody(major: number, minor: number, flags: number, flags2 = 0): Buffer {
  const b = Buffer.alloc(minor >= 36 ? 64 : 16);
  b.writeUInt32LE(major, 0);
  b.writeUInt32LE(minor, 4);
  b.writeUInt32LE(128 * 1024, 8);
  b.writeUInt32LE(flags >>> 0, 12);
  if (minor >= 36) b.writeUInt32LE(flags2 >>> 0, 16);
  return b;
}

export function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

/** fuse_batch_forget_in + fuse_forget_one entries. */
export function batchForgetBody(items: Array<[number, number]>): Buffer {
  const b = Buffer.alloc(8 + 16 * items.length);
  b.writeUInt32LE(items.length, 0);
  items.forEach(([nodeid, n], i) => {
    b.writeBigUInt64LE(BigInt(nodeid), 8 + 16 * i);
    b.writeBigUInt64LE(BigInt(n), 16 + 16 * i);
  });
  return b;
}

/** fuse_getattr_in (16 bytes). */
export function getattrBody(fh?: number): Buffer {
  const b = Buffer.alloc(16);
  if (fh !== undefined) {
    b.writeUInt32LE(1, 0);
    b.writeBigUInt64LE(BigInt(fh), 8);
  }
  return b;
}

export interface Reply {
  len: number;
  error: number;
  unique: number;
  body: Buffer;
}

export function parseReply(buffers: Buffer[]): Reply {
  const all = Buffer.concat(buffers);
  return { len: all.readUInt32LE(0), error: all.readInt32LE(4), unique: Number(all.readBigUInt64LE(8)), body: all.subarray(16) };
}

/** fuse_entry_out: nodeid, generation, valid times, then fuse_attr at 40. */
export function parseEntry(body: Buffer): { nodeid: number; ino: number; mode: number; nlink: number; size: number } {
  return {
    nodeid: Number(body.readBigUInt64LE(0)),
    ino: Number(body.readBigUInt64LE(40)),
    size: Number(body.readBigUInt64LE(48)),
    mode: body.readUInt32LE(40 + 60),
    nlink: body.readUInt32LE(40 + 64),
  };
}
