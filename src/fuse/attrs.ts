import * as fs from 'node:fs';
import { plaintextSizeOrUndefined, sealedLinkPlainLength } from '../dare';
import { FuseStat, FuseStatfs } from './native-types';

/**
 * The plaintext view's attributes: everything from the cipher inode, except a regular file's
 * size, which comes from the open file when there is one, else from the cipher size (no key).
 * A cipher size no stream can have shows as 0 and is reported by `onInvalid`. A symlink's size is
 * its plaintext target's length, from the sealed target's length (no key, FORMAT.md §7); 0 for
 * one that cannot be sealed (readlink reports it).
 */
export function toFuseStat(st: fs.BigIntStats, openSize: number | undefined, onInvalid: () => void): FuseStat {
  let size = Number(st.size);
  if (st.isFile()) {
    if (openSize !== undefined) size = openSize;
    // 0 bytes: an empty file whose prefix is not written yet (a crash cut its creation short).
    else if (size !== 0) {
      const plain = plaintextSizeOrUndefined(size);
      if (plain === undefined) onInvalid();
      size = plain ?? 0;
    }
  } else if (st.isSymbolicLink()) {
    size = sealedLinkPlainLength(size) ?? 0;
  }
  return {
    mode: Number(st.mode),
    size,
    uid: Number(st.uid),
    gid: Number(st.gid),
    nlink: Number(st.nlink),
    ino: Number(st.ino),
    dev: Number(st.dev),
    rdev: Number(st.rdev),
    blksize: Number(st.blksize),
    blocks: st.isFile() ? Math.ceil(size / 512) : Number(st.blocks),
    // Exact: a bigint stat carries the nanoseconds that a Stats' float milliseconds round away.
    atime: st.atimeNs,
    mtime: st.mtimeNs,
    ctime: st.ctimeNs,
  };
}

export function toFuseStatfs(s: fs.StatsFs): FuseStatfs {
  // fuse-native packs 32-bit fields: scale large counts into bigger blocks.
  let bsize = s.bsize;
  let { blocks, bfree, bavail } = s;
  while (blocks > 0xffffffff) {
    bsize *= 2;
    blocks = Math.floor(blocks / 2);
    bfree = Math.floor(bfree / 2);
    bavail = Math.floor(bavail / 2);
  }
  return {
    bsize,
    frsize: bsize,
    blocks,
    bfree,
    bavail,
    files: Math.min(s.files, 0xffffffff),
    ffree: Math.min(s.ffree, 0xffffffff),
    favail: Math.min(s.ffree, 0xffffffff),
    namemax: 255,
  };
}
