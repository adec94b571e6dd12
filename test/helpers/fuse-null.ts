/**
 * A FUSE server in a few lines, written against linux/fuse.h by hand (not with darefs's own
 * protocol code, which the channel tests must not depend on): INIT (1 MiB writes), GETATTR of the
 * root (a directory holding one 1 GiB file `f` that drops what is written to it, opened with
 * FOPEN_DIRECT_IO so that every write reaches us), no reply to FORGET / BATCH_FORGET, ENOSYS for
 * everything else.
 */
import * as os from 'node:os';
import type { Channel } from '../../src/fuse/kernel/channel';

export const OP = { LOOKUP: 1, FORGET: 2, GETATTR: 3, OPEN: 14, WRITE: 16, STATFS: 17, RELEASE: 18, FLUSH: 25, INIT: 26, INTERRUPT: 36, BATCH_FORGET: 42 } as const;

/** Bytes before a WRITE's data: struct fuse_in_header + struct fuse_write_in. */
export const WRITE_HEADER = 80;
/** Largest WRITE asked for (max_pages 256). */
export const MAX_WRITE = 1 << 20;
const FILE_INO = 2n;
const FILE_SIZE = 1n << 30n;
const FUSE_BIG_WRITES = 1 << 5;
const FUSE_MAX_PAGES = 1 << 22;
const FOPEN_DIRECT_IO = 1;

const IN_HEADER = 40; // struct fuse_in_header
const OUT_HEADER = 16; // struct fuse_out_header
const INIT_OUT = 64; // struct fuse_init_out (7.23 and later)
const ATTR_OUT = 104; // struct fuse_attr_out: 16 + struct fuse_attr (88)

function reply(unique: bigint, error: number, body?: Buffer): Buffer {
  const out = Buffer.alloc(OUT_HEADER + (body?.length ?? 0));
  out.writeUInt32LE(out.length, 0);
  out.writeInt32LE(error, 4);
  out.writeBigUInt64LE(unique, 8);
  body?.copy(out, OUT_HEADER);
  return out;
}

function initReply(req: Buffer): Buffer {
  const body = Buffer.alloc(INIT_OUT);
  body.writeUInt32LE(7, 0); // major
  body.writeUInt32LE(38, 4); // minor
  body.writeUInt32LE(req.readUInt32LE(IN_HEADER + 8), 8); // max_readahead: as offered
  body.writeUInt32LE((FUSE_BIG_WRITES | FUSE_MAX_PAGES) & req.readUInt32LE(IN_HEADER + 12), 12); // flags
  body.writeUInt16LE(16, 16); // max_background
  body.writeUInt16LE(12, 18); // congestion_threshold
  body.writeUInt32LE(MAX_WRITE, 20); // max_write
  body.writeUInt32LE(1, 24); // time_gran
  body.writeUInt16LE(MAX_WRITE / 4096, 28); // max_pages
  return body;
}

/** struct fuse_attr at body[a]: the root directory, or the file. */
function attr(body: Buffer, a: number, ino: bigint): void {
  body.writeBigUInt64LE(ino, a); // ino
  if (ino === FILE_INO) body.writeBigUInt64LE(FILE_SIZE, a + 8); // size
  const now = BigInt(Math.floor(Date.now() / 1000));
  body.writeBigUInt64LE(now, a + 24); // atime
  body.writeBigUInt64LE(now, a + 32); // mtime
  body.writeBigUInt64LE(now, a + 40); // ctime
  body.writeUInt32LE(ino === FILE_INO ? 0o100644 : 0o40755, a + 60); // mode
  body.writeUInt32LE(ino === FILE_INO ? 1 : 2, a + 64); // nlink
  body.writeUInt32LE(process.geteuid?.() ?? 0, a + 68); // uid
  body.writeUInt32LE(process.getegid?.() ?? 0, a + 72); // gid
  body.writeUInt32LE(4096, a + 80); // blksize
}

function attrOut(ino: bigint): Buffer {
  const body = Buffer.alloc(ATTR_OUT);
  body.writeBigUInt64LE(1n, 0); // attr_valid: 1 s
  attr(body, 16, ino);
  return body;
}

function entryOut(ino: bigint): Buffer {
  const body = Buffer.alloc(40 + 88); // struct fuse_entry_out
  body.writeBigUInt64LE(ino, 0); // nodeid
  body.writeBigUInt64LE(1n, 16); // entry_valid: 1 s
  body.writeBigUInt64LE(1n, 24); // attr_valid: 1 s
  attr(body, 40, ino);
  return body;
}

/** The reply to one request, or undefined when the kernel expects none. */
export function answer(req: Buffer): Buffer | undefined {
  if (req.length < IN_HEADER || req.readUInt32LE(0) !== req.length) throw new Error(`malformed request of ${req.length} bytes`);
  const opcode = req.readUInt32LE(4);
  const unique = req.readBigUInt64LE(8);
  const nodeid = req.readBigUInt64LE(16);
  switch (opcode) {
    case OP.FORGET:
    case OP.BATCH_FORGET:
      return undefined;
    case OP.INIT:
      return reply(unique, 0, initReply(req));
    case OP.GETATTR:
      return nodeid === 1n || nodeid === FILE_INO ? reply(unique, 0, attrOut(nodeid)) : reply(unique, -os.constants.errno.ENOENT);
    case OP.LOOKUP:
      return nodeid === 1n && req.subarray(IN_HEADER).toString('latin1') === 'f\0' ? reply(unique, 0, entryOut(FILE_INO)) : reply(unique, -os.constants.errno.ENOENT);
    case OP.OPEN: {
      if (nodeid !== FILE_INO) return reply(unique, -os.constants.errno.EISDIR);
      const body = Buffer.alloc(16); // struct fuse_open_out
      body.writeUInt32LE(FOPEN_DIRECT_IO, 8);
      return reply(unique, 0, body);
    }
    case OP.WRITE: {
      const body = Buffer.alloc(8); // struct fuse_write_out
      body.writeUInt32LE(req.length - WRITE_HEADER, 0);
      return reply(unique, 0, body);
    }
    case OP.FLUSH:
    case OP.RELEASE:
      return reply(unique, 0);
    default:
      return reply(unique, -os.constants.errno.ENOSYS);
  }
}

export interface NullServer {
  /** Opcodes seen, in order. */
  opcodes: number[];
  /** Requests per batch. */
  batches: number[];
  /** Resolves once INIT was answered. */
  initDone: Promise<void>;
  /** Resolves with onEnd's errno. */
  ended: Promise<number>;
  /** Reply write results other than 0. */
  writeErrors: number[];
  /** Every request as handed over, and a copy taken on arrival. */
  kept: Array<{ req: Buffer; copy: Buffer }>;
}

/** Starts answering on the channel. keep: which requests go to `kept` (default: all). */
export function serveNull(channel: Channel, keep: (req: Buffer) => boolean = () => true): NullServer {
  let initDone!: () => void;
  let ended!: (errno: number) => void;
  const server: NullServer = {
    opcodes: [],
    batches: [],
    writeErrors: [],
    kept: [],
    initDone: new Promise((resolve) => (initDone = resolve)),
    ended: new Promise((resolve) => (ended = resolve)),
  };
  channel.start(
    (requests) => {
      server.batches.push(requests.length);
      for (const req of requests) {
        if (keep(req)) server.kept.push({ req, copy: Buffer.from(req) });
        const opcode = req.readUInt32LE(4);
        server.opcodes.push(opcode);
        const out = answer(req);
        if (out) {
          const res = channel.write([out]);
          if (res !== 0) server.writeErrors.push(res);
        }
        if (opcode === OP.INIT) initDone();
      }
    },
    (errno) => ended(errno),
  );
  return server;
}
