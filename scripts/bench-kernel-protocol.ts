/**
 * `node dist/scripts/bench-kernel-protocol.js [--quick]`: ns per request of the FUSE protocol
 * codec alone (decode the request, encode its reply), for the requests that dominate the
 * benchmarks: READ of 4 KiB, WRITE of 4 KiB, LOOKUP, GETATTR, and a READDIRPLUS reply of 32
 * entries. Medians of rounds; the transport's budget per request is ~25 µs (PERF-NOTES).
 */
import {
  Attr,
  decodeRequest,
  DirentWriter,
  DT_REG,
  encodeAttrOut,
  encodeEntryOut,
  encodeWriteOut,
  Op,
  replyOk,
} from '../src/fuse/kernel/protocol';

const quick = process.argv.includes('--quick');
const ROUNDS = quick ? 3 : 9;
const N = quick ? 20000 : 200000;
const session = { minor: 38, setxattrExt: false };

function request(opcode: number, body: Buffer): Buffer {
  const h = Buffer.alloc(40);
  h.writeUInt32LE(40 + body.length, 0);
  h.writeUInt32LE(opcode, 4);
  h.writeBigUInt64LE(1000n, 8);
  h.writeBigUInt64LE(7n, 16);
  return Buffer.concat([h, body]);
}

const attr: Attr = {
  ino: 7,
  size: 1 << 30,
  blocks: 1 << 21,
  atime: 1700000000,
  atimensec: 1,
  mtime: 1700000000,
  mtimensec: 2,
  ctime: 1700000000,
  ctimensec: 3,
  mode: 0o100644,
  nlink: 1,
  uid: 1000,
  gid: 1000,
  rdev: 0,
  blksize: 4096,
};

const readIn = Buffer.alloc(40);
readIn.writeBigUInt64LE(3n, 0);
readIn.writeBigUInt64LE(123456789n, 8);
readIn.writeUInt32LE(4096, 16);
const writeIn = Buffer.alloc(40 + 4096);
writeIn.writeBigUInt64LE(3n, 0);
writeIn.writeUInt32LE(4096, 16);
const data = Buffer.alloc(4096);

const cases: Array<[string, () => unknown]> = [
  ['READ 4 KiB', ((buf: Buffer) => () => replyOk(decodeRequest(buf, session).h.unique, data))(request(Op.READ, readIn))],
  ['WRITE 4 KiB', ((buf: Buffer) => () => replyOk(decodeRequest(buf, session).h.unique, encodeWriteOut(4096)))(request(Op.WRITE, writeIn))],
  [
    'LOOKUP',
    ((buf: Buffer) => () => replyOk(decodeRequest(buf, session).h.unique, encodeEntryOut({ nodeid: 9, generation: 0, entryValid: 1, attrValid: 1, attr })))(
      request(Op.LOOKUP, Buffer.from('some-file-name.txt\0')),
    ),
  ],
  ['GETATTR', ((buf: Buffer) => () => replyOk(decodeRequest(buf, session).h.unique, encodeAttrOut(1, attr)))(request(Op.GETATTR, Buffer.alloc(16)))],
  [
    'READDIRPLUS 32 entries',
    ((buf: Buffer) => () => {
      const r = decodeRequest(buf, session);
      const w = new DirentWriter(8192);
      const name = Buffer.from('file-000000.dat');
      for (let i = 0; i < 32; i++) w.addPlus({ nodeid: 10 + i, generation: 0, entryValid: 1, attrValid: 1, attr }, i + 1, DT_REG, name);
      return replyOk(r.h.unique, w.finish());
    })(request(Op.READDIRPLUS, readIn)),
  ],
];

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[(s.length - 1) >> 1];
};

const results = new Map<string, number[]>();
for (let round = 0; round < ROUNDS; round++) {
  for (const [name, fn] of cases) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N; i++) fn();
    const ns = Number(process.hrtime.bigint() - t0) / N;
    const list = results.get(name) ?? [];
    list.push(ns);
    results.set(name, list);
  }
}
for (const [name, list] of results) console.log(`${name.padEnd(24)} ${median(list).toFixed(0).padStart(6)} ns per request (decode + encode)`);
