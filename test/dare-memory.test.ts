/**
 * A 512 MiB stream, generated on the fly, through encryptStream and decryptStream with flat
 * memory. Runs in a child process: ava runs test files as worker threads of one process, so the
 * resident set size seen here would include whatever the other test files allocate.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { Cipher, cipherSize, EncryptOptions, PREFIX_SIZE, Version } from '../src/dare';

const TOTAL = 512 * 1024 * 1024;
/**
 * What flat memory may still cost: V8 lets ~64 MB of dead external buffers (each package
 * allocates a few 64 KiB ones) pile up before it forces a collection, and glibc keeps freed
 * heap pages. Observed here: 44–56 MiB of rss growth, reached in the first quarter of the stream.
 * A leak of packages would grow by hundreds of MiB; the quarter check below catches slow growth.
 */
const MAX_RSS_GROWTH = 80 * 1024 * 1024;

interface PipelineResult {
  plainBytes: number;
  cipherBytes: number;
  hashIn: string;
  hashOut: string;
  rssStart: number;
  rssPeak: number;
  arrayBuffersStart: number;
  arrayBuffersPeak: number;
  /** Peak rss in each quarter of the stream. */
  rssPeakByQuarter: number[];
  samples: number;
  seconds: number;
}

/**
 * Runs in the child (serialized with toString): self-contained, using only its arguments and
 * node's built-ins. Generates `total` bytes in chunks of varied size, pipes the generators
 * encryptStream → decryptStream, and hashes both ends; samples memory every 16 packages.
 */
async function pipeline(dare: typeof import('../src/dare'), total: number, opts: EncryptOptions): Promise<PipelineResult> {
  const crypto = require('node:crypto') as typeof import('node:crypto');
  const key = crypto.randomBytes(32);
  // A pattern whose period is not a multiple of the package size, so packages differ.
  const pattern = crypto.randomBytes(1024 * 1024 + 13);
  const hashIn = crypto.createHash('sha256');
  const hashOut = crypto.createHash('sha256');
  let seed = 12345;
  const nextSize = (): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return 1 + (seed % (256 * 1024));
  };

  // One reused buffer, so that the harness adds no garbage of its own: the readers copy what
  // they take (ChunkReader asks for the next chunk only once it has consumed the last one).
  const scratch = Buffer.allocUnsafe(256 * 1024);
  async function* source(): AsyncGenerator<Buffer> {
    let produced = 0;
    while (produced < total) {
      const chunk = scratch.subarray(0, Math.min(total - produced, nextSize()));
      for (let filled = 0; filled < chunk.length; ) {
        const from = (produced + filled) % pattern.length;
        filled += pattern.copy(chunk, filled, from, Math.min(pattern.length, from + chunk.length - filled));
      }
      hashIn.update(chunk);
      produced += chunk.length;
      yield chunk;
    }
  }

  let cipherBytes = 0;
  async function* counted(packages: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    for await (const p of packages) {
      cipherBytes += p.length;
      yield p;
    }
  }

  const start = process.memoryUsage();
  let rssPeak = start.rss;
  let arrayBuffersPeak = start.arrayBuffers;
  const rssPeakByQuarter = [0, 0, 0, 0];
  let samples = 0;
  let plainBytes = 0;
  const began = process.hrtime.bigint();
  for await (const plaintext of dare.decryptStream(counted(dare.encryptStream(source(), key, opts)), key)) {
    hashOut.update(plaintext);
    plainBytes += plaintext.length;
    if (samples++ % 16 === 0) {
      const m = process.memoryUsage();
      rssPeak = Math.max(rssPeak, m.rss);
      const quarter = Math.min(3, Math.floor((4 * plainBytes) / total));
      rssPeakByQuarter[quarter] = Math.max(rssPeakByQuarter[quarter], m.rss);
      arrayBuffersPeak = Math.max(arrayBuffersPeak, m.arrayBuffers);
    }
  }
  const seconds = Number(process.hrtime.bigint() - began) / 1e9;
  const end = process.memoryUsage();
  return {
    plainBytes,
    cipherBytes,
    hashIn: hashIn.digest('hex'),
    hashOut: hashOut.digest('hex'),
    rssStart: start.rss,
    rssPeak: Math.max(rssPeak, end.rss),
    arrayBuffersStart: start.arrayBuffers,
    arrayBuffersPeak: Math.max(arrayBuffersPeak, end.arrayBuffers),
    rssPeakByQuarter,
    samples,
    seconds,
  };
}

function runInChild(total: number, opts: EncryptOptions): Promise<PipelineResult> {
  const dareModule = path.resolve(__dirname, '..', 'src', 'dare');
  const script = `(${pipeline.toString()})(require(${JSON.stringify(dareModule)}), ${total}, ${JSON.stringify(opts)})
    .then((r) => process.stdout.write(JSON.stringify(r)), (e) => { console.error(e); process.exit(1); });`;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['-e', script], { maxBuffer: 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`child failed: ${error.message}\n${stderr}`));
      else resolve(JSON.parse(stdout) as PipelineResult);
    });
  });
}

const MiB = (n: number): string => `${(n / 1024 / 1024).toFixed(1)} MiB`;

test('512 MiB through encryptStream and decryptStream comes back intact in flat memory', async (t) => {
  t.timeout(90_000);
  const r = await runInChild(TOTAL, { version: Version.V20, cipher: Cipher.AES_256_GCM });
  t.log(`${MiB(r.plainBytes)} in ${r.seconds.toFixed(1)} s (${(r.plainBytes / 1e6 / r.seconds).toFixed(0)} MB/s through both); ${r.samples} packages`);
  t.log(`rss ${MiB(r.rssStart)} → peak ${MiB(r.rssPeak)} (by quarter: ${r.rssPeakByQuarter.map(MiB).join(', ')}); arrayBuffers ${MiB(r.arrayBuffersStart)} → peak ${MiB(r.arrayBuffersPeak)}`);
  t.is(r.plainBytes, TOTAL);
  t.is(r.cipherBytes, cipherSize(TOTAL) - PREFIX_SIZE);
  t.is(r.hashOut, r.hashIn);
  t.true(r.rssPeak - r.rssStart < MAX_RSS_GROWTH, `rss grew by ${MiB(r.rssPeak - r.rssStart)}`);
  t.true(r.arrayBuffersPeak - r.arrayBuffersStart < MAX_RSS_GROWTH, `arrayBuffers grew by ${MiB(r.arrayBuffersPeak - r.arrayBuffersStart)}`);
  // Flat, not merely small: the later three quarters peak no higher than the first (plus slack).
  const later = Math.max(...r.rssPeakByQuarter.slice(1));
  t.true(later - r.rssPeakByQuarter[0] < 16 * 1024 * 1024, `rss kept growing after the first quarter, to ${MiB(later)}`);
});
