/**
 * Pulls exact-size pieces out of an async iterable of buffers of any size, copying each byte
 * once. Holds at most one pending input chunk, so memory stays bounded by the caller's sizes.
 */
export type ByteSource = AsyncIterable<Buffer | Uint8Array | string> | Iterable<Buffer | Uint8Array | string>;

export class ChunkReader {
  private readonly iterator: AsyncIterator<Buffer | Uint8Array | string> | Iterator<Buffer | Uint8Array | string>;
  private pending: Buffer = Buffer.alloc(0);
  private done = false;

  constructor(source: ByteSource) {
    this.iterator = Symbol.asyncIterator in source ? source[Symbol.asyncIterator]() : source[Symbol.iterator]();
  }

  /** Reads up to `size` bytes into a new buffer; shorter only at the end of the input. */
  async read(size: number): Promise<Buffer> {
    const out = Buffer.allocUnsafe(size);
    let filled = 0;
    while (filled < size) {
      if (this.pending.length === 0) {
        if (this.done) break;
        const next = await this.iterator.next();
        if (next.done) {
          this.done = true;
          break;
        }
        const value = next.value;
        this.pending = typeof value === 'string' ? Buffer.from(value) : Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
        continue;
      }
      const n = this.pending.copy(out, filled, 0, Math.min(this.pending.length, size - filled));
      filled += n;
      this.pending = this.pending.subarray(n);
    }
    return filled === size ? out : out.subarray(0, filled);
  }

  /** Lets the source release its resources when we stop early. */
  async close(): Promise<void> {
    if (!this.done) {
      this.done = true;
      await this.iterator.return?.();
    }
  }
}
