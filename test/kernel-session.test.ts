import test from 'ava';
import { Errno, FuseOperations, FuseStat } from '../src/fuse/native-types';
import { KernelSession } from '../src/fuse/kernel/server';
import { batchForgetBody, cstr, getattrBody, initBody, parseEntry, parseReply, Reply, request, u64 } from './helpers/fuse-wire';

const FUSE_LOOKUP = 1;
const FUSE_FORGET = 2;
const FUSE_GETATTR = 3;
const FUSE_UNLINK = 10;
const FUSE_LINK = 13;
const FUSE_INIT = 26;
const FUSE_BATCH_FORGET = 42;

/** A tiny in-memory tree behind path-based operations: names map to inode numbers. */
function memoryOps(): { ops: FuseOperations; names: Map<string, number>; modes: Map<number, number> } {
  const names = new Map<string, number>([['/', 1]]);
  const modes = new Map<number, number>([[1, 0o40755]]);
  const stat = (ino: number): FuseStat => ({ mode: modes.get(ino) ?? 0, ino, dev: 7, nlink: [...names.values()].filter((i) => i === ino).length, size: 0 });
  const ops: FuseOperations = {
    getattr: (p, cb) => {
      const ino = names.get(p);
      if (ino === undefined) cb(Errno.ENOENT);
      else cb(0, stat(ino));
    },
    unlink: (p, cb) => {
      if (!names.delete(p)) cb(Errno.ENOENT);
      else cb(0);
    },
    link: (from, to, cb) => {
      const ino = names.get(from);
      if (ino === undefined) return cb(Errno.ENOENT);
      names.set(to, ino);
      cb(0);
    },
  };
  return { ops, names, modes };
}

interface Harness {
  session: KernelSession;
  replies: Reply[];
  send(buf: Buffer): Promise<Reply | undefined>;
}

function harness(ops: FuseOperations, minor = 38): Harness {
  const replies: Reply[] = [];
  const session = new KernelSession(ops, {
    write(buffers) {
      replies.push(parseReply(buffers));
      return 0;
    },
  });
  const send = async (buf: Buffer): Promise<Reply | undefined> => {
    const before = replies.length;
    session.handle(buf);
    for (let i = 0; i < 20 && replies.length === before; i++) await new Promise((r) => setImmediate(r));
    return replies.length > before ? replies[replies.length - 1] : undefined;
  };
  void minor;
  return { session, replies, send };
}

async function initialised(ops: FuseOperations, minor = 38): Promise<Harness> {
  const h = harness(ops);
  const r = await h.send(request(FUSE_INIT, 0, initBody(7, minor, 0x73fffffb)));
  if (!r || r.error !== 0) throw new Error(`INIT failed: ${r?.error}`);
  return h;
}

test('INIT with a current kernel (7.45, flags2): answered with our minor and a 64-byte reply', async (t) => {
  const h = harness(memoryOps().ops);
  const r = await h.send(request(FUSE_INIT, 0, initBody(7, 45, 0x73fffffb, 0x5fd)));
  t.truthy(r);
  t.is(r?.error, 0);
  t.is(r?.len, 16 + 64);
  t.is(r?.body.readUInt32LE(0), 7);
  t.is(r?.body.readUInt32LE(4), 38);
  // max_write (offset 20) is what we asked for: 1 MiB, granted through max_pages.
  t.is(r?.body.readUInt32LE(20), 1 << 20);
});

test('INIT with an old kernel (7.22): the reply has the 7.22 size and minor 22', async (t) => {
  const h = harness(memoryOps().ops);
  const r = await h.send(request(FUSE_INIT, 0, initBody(7, 22, 0x0000fffb)));
  t.is(r?.error, 0);
  t.is(r?.len, 16 + 24);
  t.is(r?.body.readUInt32LE(4), 22);
});

test('a request before INIT is refused; an unknown opcode is answered ENOSYS', async (t) => {
  const h = harness(memoryOps().ops);
  const early = await h.send(request(FUSE_GETATTR, 1, getattrBody()));
  t.is(early?.error, Errno.EIO);
  await h.send(request(FUSE_INIT, 0, initBody(7, 38, 0)));
  const unknown = await h.send(request(4242, 1, Buffer.alloc(8)));
  t.is(unknown?.error, Errno.ENOSYS);
  const statx = await h.send(request(52, 1, Buffer.alloc(24)));
  t.is(statx?.error, Errno.ENOSYS);
});

test('one node ID per inode: two names of a hard-linked file are one kernel inode', async (t) => {
  const mem = memoryOps();
  mem.names.set('/a', 5);
  mem.names.set('/b', 5);
  mem.modes.set(5, 0o100644);
  const h = await initialised(mem.ops);
  const a = await h.send(request(FUSE_LOOKUP, 1, cstr('a')));
  const b = await h.send(request(FUSE_LOOKUP, 1, cstr('b')));
  t.is(a?.error, 0);
  t.is(b?.error, 0);
  const ea = parseEntry(a?.body ?? Buffer.alloc(128));
  const eb = parseEntry(b?.body ?? Buffer.alloc(128));
  t.is(ea.nodeid, eb.nodeid);
  t.is(ea.ino, 5);
  t.is(ea.nlink, 2);
  // LINK through the node answers the same node again, with the new link count.
  const l = await h.send(request(FUSE_LINK, 1, Buffer.concat([u64(ea.nodeid), cstr('c')])));
  t.is(l?.error, 0);
  t.is(parseEntry(l?.body ?? Buffer.alloc(128)).nodeid, ea.nodeid);
  t.is(parseEntry(l?.body ?? Buffer.alloc(128)).nlink, 3);
  // Unlinking the newest name leaves the node reachable (by its other names) for GETATTR.
  t.is((await h.send(request(FUSE_UNLINK, 1, cstr('c'))))?.error, 0);
  const g = await h.send(request(FUSE_GETATTR, ea.nodeid, getattrBody()));
  t.is(g?.error, 0);
  t.is(g?.body.readUInt32LE(16 + 64), 2, 'nlink in fuse_attr_out');
});

test('FORGET accounting: a node lives until every lookup is given back, then its ID is unknown', async (t) => {
  const mem = memoryOps();
  mem.names.set('/x', 9);
  mem.modes.set(9, 0o100600);
  const h = await initialised(mem.ops);
  let id = 0;
  for (let i = 0; i < 3; i++) id = parseEntry((await h.send(request(FUSE_LOOKUP, 1, cstr('x'))))?.body ?? Buffer.alloc(128)).nodeid;
  t.is(h.session.nodes.get(id).nlookup, 3);
  t.is(await h.send(request(FUSE_FORGET, id, u64(2))), undefined, 'FORGET is never answered');
  t.is(h.session.nodes.get(id).nlookup, 1);
  t.is((await h.send(request(FUSE_GETATTR, id, getattrBody())))?.error, 0);
  t.is(await h.send(request(FUSE_BATCH_FORGET, 0, batchForgetBody([[id, 1]]))), undefined);
  t.false(h.session.nodes.has(id));
  t.is((await h.send(request(FUSE_GETATTR, id, getattrBody())))?.error, Errno.ESTALE);
  // The root is never forgotten.
  await h.send(request(FUSE_FORGET, 1, u64(1)));
  t.true(h.session.nodes.has(1));
});

test('a failed lookup is a negative entry the kernel may cache (node ID 0, entry timeout set)', async (t) => {
  const h = await initialised(memoryOps().ops);
  const r = await h.send(request(FUSE_LOOKUP, 1, cstr('missing')));
  t.is(r?.error, 0);
  t.is(Number(r?.body.readBigUInt64LE(0)), 0);
  t.true(Number(r?.body.readBigUInt64LE(16)) >= 1, 'entry_valid');
});

test('an inode number reused for another type is a new node', async (t) => {
  const mem = memoryOps();
  mem.names.set('/f', 11);
  mem.modes.set(11, 0o100644);
  const h = await initialised(mem.ops);
  const first = parseEntry((await h.send(request(FUSE_LOOKUP, 1, cstr('f'))))?.body ?? Buffer.alloc(128)).nodeid;
  mem.names.delete('/f');
  mem.names.set('/d', 11);
  mem.modes.set(11, 0o40755);
  const second = parseEntry((await h.send(request(FUSE_LOOKUP, 1, cstr('d'))))?.body ?? Buffer.alloc(128)).nodeid;
  t.not(first, second);
});

test('an operation the filesystem does not offer is answered ENOSYS, never left waiting', async (t) => {
  const h = await initialised(memoryOps().ops);
  // fuse_getxattr_in: size, padding; then the name (the kernel asks security.capability before writes).
  const getxattr = await h.send(request(22, 1, Buffer.concat([Buffer.alloc(8), cstr('security.capability')])));
  t.is(getxattr?.error, Errno.ENOSYS);
  const readlink = await h.send(request(5, 1));
  t.is(readlink?.error, Errno.ENOSYS);
});
