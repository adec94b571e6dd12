import { LRUCache } from 'lru-cache';

export interface PackageCacheStats {
  hits: number;
  misses: number;
  bytes: number;
  maxBytes: number;
}

/**
 * Decrypted packages of a volume, bounded in bytes. Keys are (file object id, package index):
 * a file's entries are dropped when its last handle closes, so stale plaintext never outlives
 * the object that keeps it consistent with its writes. Plaintext that leaves the cache (evicted,
 * replaced, dropped) is zeroed: nobody holds a cached buffer past the synchronous call that got
 * it, and plaintext should not linger in freed memory (or a swap file) longer than needed.
 */
export class PackageCache {
  private readonly lru: LRUCache<string, Buffer>;
  private hits = 0;
  private misses = 0;

  constructor(readonly maxBytes: number) {
    this.lru = new LRUCache<string, Buffer>({
      maxSize: Math.max(1, maxBytes),
      sizeCalculation: (buf) => Math.max(1, buf.length),
      dispose: (buf) => buf.fill(0),
    });
  }

  get(fileId: number, index: number): Buffer | undefined {
    if (this.maxBytes === 0) return undefined;
    const buf = this.lru.get(`${fileId}:${index}`);
    if (buf === undefined) this.misses++;
    else this.hits++;
    return buf;
  }

  set(fileId: number, index: number, plaintext: Buffer): void {
    if (this.maxBytes === 0 || plaintext.length > this.maxBytes) return;
    this.lru.set(`${fileId}:${index}`, plaintext);
  }

  delete(fileId: number, index: number): void {
    this.lru.delete(`${fileId}:${index}`);
  }

  /** Drops every entry of one file, given the indexes it may have cached. */
  dropFile(fileId: number, indexes: Iterable<number>): void {
    for (const i of indexes) this.lru.delete(`${fileId}:${i}`);
  }

  get stats(): PackageCacheStats {
    return { hits: this.hits, misses: this.misses, bytes: this.lru.calculatedSize, maxBytes: this.maxBytes };
  }
}
