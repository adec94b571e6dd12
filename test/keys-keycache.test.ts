import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { DisposedError, KeyCache, masterDeriver, masterFileKey, type KeyDeriver } from '../src/keys';

interface FakeDeriver extends KeyDeriver {
  calls: number;
  disposed: boolean;
  /** Every buffer derive() handed out, to check that the cache zeroes them. */
  issued: Buffer[];
  /** Resolve all derivations waiting on the gate. */
  open(): void;
}

const keyFor = (prefix: Buffer): Buffer => createHash('sha256').update(prefix).digest();

/** A deriver that counts calls, can be held at a gate, and can be told to fail. */
function fakeDeriver(opts: { gated?: boolean; failTimes?: number } = {}): FakeDeriver {
  let release: () => void = () => undefined;
  let gate = opts.gated ? new Promise<void>((r) => (release = r)) : Promise.resolve();
  let failures = opts.failTimes ?? 0;
  const d: FakeDeriver = {
    kind: 'fake',
    calls: 0,
    disposed: false,
    issued: [],
    open() {
      release();
      gate = Promise.resolve();
    },
    async derive(prefix: Buffer): Promise<Buffer> {
      d.calls++;
      await gate;
      if (failures > 0) {
        failures--;
        throw new Error('derivation failed');
      }
      const k = keyFor(prefix);
      d.issued.push(k);
      return k;
    },
    dispose() {
      d.disposed = true;
    },
  };
  return d;
}

const isZero = (b: Buffer): boolean => b.every((x) => x === 0);

test('concurrent gets for one prefix share one derivation', async (t) => {
  const d = fakeDeriver({ gated: true });
  const cache = new KeyCache(d);
  const prefix = randomBytes(32);
  const p1 = cache.get(prefix);
  const p2 = cache.get(Buffer.from(prefix));
  const p3 = cache.get(prefix);
  t.is(cache.stats.pending, 1);
  d.open();
  const [a, b, c] = await Promise.all([p1, p2, p3]);
  t.is(d.calls, 1);
  t.deepEqual(a, keyFor(prefix));
  t.deepEqual(b, a);
  t.deepEqual(c, a);
  // Each caller owns its own copy.
  t.not(a, b);
  a.fill(0);
  t.deepEqual(b, keyFor(prefix));
  t.like(cache.stats, { hits: 0, misses: 3, derivations: 1, failures: 0, size: 1, pending: 0 });
  // Later gets are hits and do not derive again.
  t.deepEqual(await cache.get(prefix), keyFor(prefix));
  t.is(d.calls, 1);
  t.is(cache.stats.hits, 1);
});

test('the caller zeroing its key does not damage the cached key', async (t) => {
  const cache = new KeyCache(fakeDeriver());
  const prefix = randomBytes(32);
  const k = await cache.get(prefix);
  k.fill(0);
  t.deepEqual(await cache.get(prefix), keyFor(prefix));
});

test('the cache is bounded by maxKeys, least recently used out, and evicted keys are zeroed', async (t) => {
  const d = fakeDeriver();
  const cache = new KeyCache(d, { maxKeys: 3 });
  const prefixes = [0, 1, 2, 3].map(() => randomBytes(32));
  for (const p of prefixes.slice(0, 3)) await cache.get(p);
  await cache.get(prefixes[0]); // 0 becomes most recent; 1 is now the LRU entry
  await cache.get(prefixes[3]);
  t.is(cache.stats.size, 3);
  t.false(cache.has(prefixes[1]));
  t.true(cache.has(prefixes[0]));
  t.true(cache.has(prefixes[2]));
  t.true(cache.has(prefixes[3]));
  // The cache stores the deriver's own buffers; the evicted one is zeroed.
  t.true(isZero(d.issued[1]));
  t.false(isZero(d.issued[0]));
  // An evicted key is derived again on demand.
  t.deepEqual(await cache.get(prefixes[1]), keyFor(prefixes[1]));
  t.is(d.calls, 5);
});

test('a failed derivation rejects every waiter and is not cached', async (t) => {
  const d = fakeDeriver({ gated: true, failTimes: 1 });
  const cache = new KeyCache(d);
  const prefix = randomBytes(32);
  const p1 = cache.get(prefix);
  const p2 = cache.get(prefix);
  d.open();
  await t.throwsAsync(p1, { message: 'derivation failed' });
  await t.throwsAsync(p2, { message: 'derivation failed' });
  t.like(cache.stats, { size: 0, pending: 0, failures: 1, derivations: 1 });
  // The next get derives again and succeeds.
  t.deepEqual(await cache.get(prefix), keyFor(prefix));
  t.is(d.calls, 2);
});

test('a deriver that throws synchronously or returns a wrong-size key is a failure, not a crash', async (t) => {
  const throwing: KeyDeriver = {
    kind: 'throwing',
    derive() {
      throw new Error('sync boom');
    },
    dispose() {},
  };
  await t.throwsAsync(new KeyCache(throwing).get(randomBytes(32)), { message: 'sync boom' });
  const short: KeyDeriver = { kind: 'short', derive: async () => Buffer.alloc(16, 1), dispose() {} };
  const cache = new KeyCache(short);
  await t.throwsAsync(cache.get(randomBytes(32)), { instanceOf: RangeError });
  t.is(cache.stats.size, 0);
});

test('clear() zeroes every cached key; a derivation running across clear() is answered but not cached', async (t) => {
  const d = fakeDeriver();
  const cache = new KeyCache(d);
  const a = randomBytes(32);
  const b = randomBytes(32);
  await cache.get(a);
  await cache.get(b);
  cache.clear();
  t.is(cache.stats.size, 0);
  t.true(d.issued.every(isZero));

  const gated = fakeDeriver({ gated: true });
  const c2 = new KeyCache(gated);
  const pending = c2.get(a);
  c2.clear();
  gated.open();
  t.deepEqual(await pending, keyFor(a));
  t.is(c2.stats.size, 0);
  t.true(isZero(gated.issued[0]));
});

test('dispose() clears, disposes the deriver, and refuses later gets', async (t) => {
  const d = fakeDeriver();
  const cache = new KeyCache(d);
  await cache.get(randomBytes(32));
  cache.dispose();
  t.true(d.disposed);
  t.true(d.issued.every(isZero));
  await t.throwsAsync(cache.get(randomBytes(32)), { instanceOf: DisposedError });
});

test('prefix size and maxKeys are validated', async (t) => {
  const cache = new KeyCache(fakeDeriver());
  await t.throwsAsync(cache.get(Buffer.alloc(31)), { instanceOf: RangeError });
  t.throws(() => new KeyCache(fakeDeriver(), { maxKeys: 0 }), { instanceOf: RangeError });
  t.throws(() => new KeyCache(fakeDeriver(), { maxKeys: 1.5 }), { instanceOf: RangeError });
  t.is(new KeyCache(fakeDeriver()).stats.maxKeys, 4096);
});

test('works with a real master deriver, many distinct prefixes', async (t) => {
  const master = randomBytes(32);
  const cache = new KeyCache(masterDeriver(master, 'hmac-sha256'), { maxKeys: 16 });
  const prefixes = Array.from({ length: 64 }, () => randomBytes(32));
  const keys = await Promise.all(prefixes.map((p) => cache.get(p)));
  prefixes.forEach((p, i) => t.deepEqual(keys[i], masterFileKey(master, p)));
  t.is(cache.stats.size, 16);
  t.is(cache.stats.derivations, 64);
});
