// Per-stream key cache (FORMAT.md §4). ncrypt derivation costs ~0.2 s of
// scrypt per file, so keys are derived once per prefix and kept in a bounded
// LRU; a key that leaves the cache is zeroed.
//
// Ownership: get() hands out a COPY of the cached key, owned by the caller,
// who should zero it (key.fill(0)) when done. Handing out the cached buffer
// itself would be cheaper, but an open file can hold its key across many
// awaits, and if that buffer were evicted and zeroed meanwhile, the caller
// would silently seal new packages under an all-zero key.

import { LRUCache } from 'lru-cache';
import { DisposedError } from './errors';
import { KEY_SIZE, PREFIX_SIZE, type KeyDeriver } from './kdf';

export interface KeyCacheOptions {
  /** Most keys kept at once (32 bytes each plus bookkeeping). Default 4096. */
  readonly maxKeys?: number;
}

export interface KeyCacheStats {
  /** get() calls answered from the cache. */
  readonly hits: number;
  /** get() calls that found no cached key (including those that joined a running derivation). */
  readonly misses: number;
  /** Derivations actually started; misses − derivations = requests that shared one. */
  readonly derivations: number;
  /** Derivations that failed (their result was not cached). */
  readonly failures: number;
  /** Keys currently cached. */
  readonly size: number;
  /** Derivations currently running. */
  readonly pending: number;
  readonly maxKeys: number;
}

export const DEFAULT_MAX_KEYS = 4096;

interface Waiter {
  resolve(key: Buffer): void;
  reject(err: unknown): void;
}

interface Flight {
  readonly waiters: Waiter[];
  // clear() bumps the cache generation; a derivation started before a clear
  // must not repopulate the cache with a key from the old generation.
  readonly generation: number;
}

export class KeyCache {
  readonly #deriver: KeyDeriver;
  readonly #lru: LRUCache<string, Buffer>;
  readonly #pending = new Map<string, Flight>();
  readonly #maxKeys: number;
  #generation = 0;
  #disposed = false;
  #hits = 0;
  #misses = 0;
  #derivations = 0;
  #failures = 0;

  /** The cache takes ownership of `deriver`: dispose() disposes it too. */
  constructor(deriver: KeyDeriver, options: KeyCacheOptions = {}) {
    const maxKeys = options.maxKeys ?? DEFAULT_MAX_KEYS;
    if (!Number.isSafeInteger(maxKeys) || maxKeys < 1) {
      throw new RangeError(`maxKeys must be a positive integer, got ${maxKeys}`);
    }
    this.#deriver = deriver;
    this.#maxKeys = maxKeys;
    this.#lru = new LRUCache<string, Buffer>({
      max: maxKeys,
      // Runs on eviction, delete, overwrite and clear(): the only places a key
      // leaves the cache.
      dispose: (key) => {
        key.fill(0);
      },
    });
  }

  /**
   * The key for the stream with this 32-byte prefix, as a fresh buffer owned
   * by the caller. Concurrent calls for one prefix share a single derivation;
   * a failed derivation rejects all of them and is not cached.
   */
  get(prefix: Buffer): Promise<Buffer> {
    if (this.#disposed) return Promise.reject(new DisposedError('key cache'));
    if (prefix.length !== PREFIX_SIZE) {
      return Promise.reject(
        new RangeError(`stream prefix must be ${PREFIX_SIZE} bytes, got ${prefix.length}`),
      );
    }
    // The prefix is public (it is stored in clear at the start of each file),
    // so using it as a map key leaks nothing.
    const id = prefix.toString('hex');
    const cached = this.#lru.get(id);
    if (cached !== undefined) {
      this.#hits++;
      return Promise.resolve(Buffer.from(cached));
    }
    this.#misses++;
    return new Promise<Buffer>((resolve, reject) => {
      const running = this.#pending.get(id);
      if (running !== undefined) {
        running.waiters.push({ resolve, reject });
        return;
      }
      const flight: Flight = { waiters: [{ resolve, reject }], generation: this.#generation };
      this.#pending.set(id, flight);
      this.#derivations++;
      // Copy: the caller may reuse its prefix buffer while scrypt runs.
      this.#run(id, Buffer.from(prefix), flight);
    });
  }

  #run(id: string, prefix: Buffer, flight: Flight): void {
    let derived: Promise<Buffer>;
    try {
      derived = this.#deriver.derive(prefix);
    } catch (err) {
      derived = Promise.reject(err);
    }
    derived.then(
      (key) => {
        this.#pending.delete(id);
        if (key.length !== KEY_SIZE) {
          key.fill(0);
          this.#fail(flight, new RangeError(`key deriver returned ${key.length} bytes, expected ${KEY_SIZE}`));
          return;
        }
        // Each waiter gets its copy now, synchronously: nothing can evict and
        // zero `key` between here and the copies.
        for (const w of flight.waiters) w.resolve(Buffer.from(key));
        if (this.#disposed || flight.generation !== this.#generation) key.fill(0);
        else this.#lru.set(id, key);
      },
      (err: unknown) => {
        this.#pending.delete(id);
        this.#fail(flight, err);
      },
    );
  }

  #fail(flight: Flight, err: unknown): void {
    this.#failures++;
    for (const w of flight.waiters) w.reject(err);
  }

  /** Whether a key for this prefix is cached (does not touch LRU order or stats). */
  has(prefix: Buffer): boolean {
    return this.#lru.has(prefix.toString('hex'));
  }

  /**
   * Zeroes and drops every cached key. Derivations already running still
   * answer their callers but are not cached.
   */
  clear(): void {
    this.#generation++;
    this.#lru.clear();
  }

  /** clear(), then dispose the deriver (zeroing the volume secret); get() rejects afterwards. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.clear();
    this.#deriver.dispose();
  }

  get stats(): KeyCacheStats {
    return {
      hits: this.#hits,
      misses: this.#misses,
      derivations: this.#derivations,
      failures: this.#failures,
      size: this.#lru.size,
      pending: this.#pending.size,
      maxKeys: this.#maxKeys,
    };
  }
}
