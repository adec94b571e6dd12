/**
 * A FUSE server in a few lines, written against linux/fuse.h by hand (not with darefs's own
 * protocol code, which the channel tests must not depend on): INIT, GETATTR of the root (an
 * empty directory), no reply to FORGET / BATCH_FORGET, ENOSYS for everything else.
 */
import * as os from 'node:os';
import type { Channel } from '../../src/fuse/kernel/channel';

export const OP = { LOOKUP: 1, FORGET: 2, GETATTR: 3, STATFS: 17, INIT: 26, INTERRUPT: 36, BATCH_FORGET: 42 } as const;

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
  body.writeUInt32LE(0, 12); // flags: nothing asked for
  body.writeUInt16LE(16, 16); // max_background
  body.writeUInt16LE(12, 18); // congestion_threshold
  body.writeUInt32LE(131072, 20); // max_write
  body.writeUInt32LE(1, 24); // time_gran
  return body;
}

function rootAttr(): Buffer {
  const body = Buffer.alloc(ATTR_OUT);
  body.writeBigUInt64LE(1n, 0); // attr_valid: 1 s
  const a = 16;
  body.writeBigUInt64LE(1n, a); // ino
  const now = BigInt(Math.floor(Date.now() / 1000));
  body.writeBigUInt64LE(now, a + 24); // atime
  body.writeBigUInt64LE(now, a + 32); // mtime
  body.writeBigUInt64LE(now, a + 40); // ctime
  body.writeUInt32LE(0o40755, a + 60); // mode: a directory
  body.writeUInt32LE(2, a + 64); // nlink
  body.writeUInt32LE(process.geteuid?.() ?? 0, a + 68); // uid
  body.writeUInt32LE(process.getegid?.() ?? 0, a + 72); // gid
  body.writeUInt32LE(4096, a + 80); // blksize
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
      return nodeid === 1n ? reply(unique, 0, rootAttr()) : reply(unique, -os.constants.errno.ENOENT);
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

/** Starts answering on the channel. */
export function serveNull(channel: Channel): NullServer {
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
        server.kept.push({ req, copy: Buffer.from(req) });
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
