/**
 * A FIFO lock. Store operations are mostly synchronous, but key derivation and stream rewrites
 * await; the lock keeps a second request on the same file from running in between.
 */
export class Mutex {
  private tail: Promise<void> = Promise.resolve();

  run<T>(fn: () => Promise<T> | T): Promise<T> {
    const result = this.tail.then(fn);
    this.tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }
}
