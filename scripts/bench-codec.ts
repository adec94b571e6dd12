/**
 * `npm run bench:codec` (node dist/scripts/bench-codec.js [--quick] [--cli PATH]):
 *
 * 1. Seal and open throughput of 64 KiB packages per cipher with src/dare's sealPackage /
 *    openPackage, next to bare node:crypto (createCipheriv/update/final/getAuthTag) on the same
 *    buffers, in interleaved rounds of one run; medians, and their ratio (target ≥ 0.9).
 * 2. Encrypt and decrypt of a 1 GiB file through the CLI (master mode, 32-byte key file): MB/s
 *    and peak memory. Skipped when the CLI is not built.
 *
 * MB/s counts plaintext bytes, 10^6 per MB.
 */
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Cipher, cipherSize, HEADER_SIZE, MAX_PAYLOAD, openPackage, PackageExpectation, sealPackage, TAG_SIZE, Version } from '../src/dare';

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const cliIndex = argv.indexOf('--cli');
const CLI = cliIndex >= 0 ? path.resolve(argv[cliIndex + 1]) : path.resolve(__dirname, '..', 'src', 'cli', 'main.js');

const ROUNDS = quick ? 3 : 9;
/** Per round and variant: 16 MiB (--quick) or 96 MiB, run in batches of 4 MiB that alternate
 * between the variants, so that load from other processes hits all of them alike. */
const PACKAGES_PER_ROUND = quick ? 256 : 1536;
const BATCH = 64;
const CLI_BYTES = quick ? 64 * 1024 * 1024 : 1024 * 1024 * 1024;

const mbps = (bytes: number, seconds: number): number => bytes / 1e6 / seconds;
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const pad = (s: string, n: number): string => s.padStart(n);

// ---------------------------------------------------------------- 1. package codec

type CipherName = 'aes' | 'chacha';
const CIPHERS: Array<{ name: CipherName; id: Cipher; algorithm: crypto.CipherGCMTypes }> = [
  { name: 'aes', id: Cipher.AES_256_GCM, algorithm: 'aes-256-gcm' },
  // ChaCha20-Poly1305 has the GCM-style AEAD interface; the cast picks those overloads.
  { name: 'chacha', id: Cipher.CHACHA20_POLY1305, algorithm: 'chacha20-poly1305' as crypto.CipherGCMTypes },
];

const VARIANTS = ['dare seal', 'bare seal', 'dare open', 'bare open'] as const;
type Variant = (typeof VARIANTS)[number];

/** Distinct buffers, cycled through, so no measurement works on one hot buffer only. */
const BUFFERS = 16;

interface Workload {
  /** Seals or opens `count` packages. */
  run(count: number): void;
}

/** Results are folded in here, so no work is ever dead code. */
let sink = 0;

function codecWorkloads(c: (typeof CIPHERS)[number]): Record<Variant, Workload> {
  const key = crypto.randomBytes(32);
  const streamNonce = crypto.randomBytes(12);
  const plaintexts = Array.from({ length: BUFFERS }, () => crypto.randomBytes(MAX_PAYLOAD));
  const sealOpts = (index: number) => ({ version: Version.V20, cipher: c.id, index, nonce: streamNonce, final: false });
  const sealed = plaintexts.map((p, i) => sealPackage(key, sealOpts(i), p));
  const reference = Buffer.from(sealed[0].subarray(0, HEADER_SIZE));
  const wants: PackageExpectation[] = sealed.map((_, index) => ({ index, payloadLength: MAX_PAYLOAD, last: false, reference }));
  // Bare node:crypto on the same bytes: the AEAD nonce and additional data of each package.
  const nonces = sealed.map((p, i) => {
    const n = Buffer.from(p.subarray(4, HEADER_SIZE));
    n.writeUInt32LE((n.readUInt32LE(8) ^ i) >>> 0, 8);
    return n;
  });
  const aads = sealed.map((p) => p.subarray(0, 4));
  const ciphertexts = sealed.map((p) => p.subarray(HEADER_SIZE, HEADER_SIZE + MAX_PAYLOAD));
  const tags = sealed.map((p) => p.subarray(HEADER_SIZE + MAX_PAYLOAD, HEADER_SIZE + MAX_PAYLOAD + TAG_SIZE));
  return {
    'dare seal': {
      run(n) {
        for (let i = 0; i < n; i++) sink ^= sealPackage(key, sealOpts(i % BUFFERS), plaintexts[i % BUFFERS])[HEADER_SIZE];
      },
    },
    'bare seal': {
      run(n) {
        for (let i = 0; i < n; i++) {
          const j = i % BUFFERS;
          const e = crypto.createCipheriv(c.algorithm, key, nonces[j], { authTagLength: TAG_SIZE });
          e.setAAD(aads[j], { plaintextLength: MAX_PAYLOAD });
          const ct = e.update(plaintexts[j]);
          e.final();
          sink ^= ct[0] ^ e.getAuthTag()[0];
        }
      },
    },
    'dare open': {
      run(n) {
        for (let i = 0; i < n; i++) sink ^= openPackage(key, sealed[i % BUFFERS], wants[i % BUFFERS])[0];
      },
    },
    'bare open': {
      run(n) {
        for (let i = 0; i < n; i++) {
          const j = i % BUFFERS;
          const d = crypto.createDecipheriv(c.algorithm, key, nonces[j], { authTagLength: TAG_SIZE });
          d.setAAD(aads[j], { plaintextLength: MAX_PAYLOAD });
          d.setAuthTag(tags[j]);
          const pt = d.update(ciphertexts[j]);
          d.final();
          sink ^= pt[0];
        }
      },
    },
  };
}

/** One round: seconds each variant took for PACKAGES_PER_ROUND packages, batches interleaved. */
function round(w: Record<Variant, Workload>, rotate: number): Record<Variant, number> {
  const seconds = { 'dare seal': 0, 'bare seal': 0, 'dare open': 0, 'bare open': 0 };
  for (let done = 0; done < PACKAGES_PER_ROUND; done += BATCH) {
    for (let k = 0; k < VARIANTS.length; k++) {
      const name = VARIANTS[(k + rotate) % VARIANTS.length];
      const start = process.hrtime.bigint();
      w[name].run(BATCH);
      seconds[name] += Number(process.hrtime.bigint() - start) / 1e9;
    }
  }
  return seconds;
}

function benchCodec(): void {
  console.log(`Package codec: 64 KiB packages, DARE 2.0; ${ROUNDS} rounds of ${(PACKAGES_PER_ROUND * MAX_PAYLOAD) / 1048576} MiB per variant, interleaved in 4 MiB batches`);
  console.log('MB/s: median over rounds; ratio: median over rounds of darefs / node:crypto in the same round');
  console.log(`${'cipher'.padEnd(8)}${'op'.padEnd(6)}${pad('darefs', 10)}${pad('node:crypto', 13)}${pad('ratio', 8)}`);
  const bytes = PACKAGES_PER_ROUND * MAX_PAYLOAD;
  for (const c of CIPHERS) {
    const w = codecWorkloads(c);
    for (const name of VARIANTS) w[name].run(BATCH); // warm-up
    const rounds = Array.from({ length: ROUNDS }, (_, r) => round(w, r));
    for (const op of ['seal', 'open'] as const) {
      const dare = median(rounds.map((r) => mbps(bytes, r[`dare ${op}`])));
      const bare = median(rounds.map((r) => mbps(bytes, r[`bare ${op}`])));
      const ratio = median(rounds.map((r) => r[`bare ${op}`] / r[`dare ${op}`]));
      console.log(`${c.name.padEnd(8)}${op.padEnd(6)}${pad(dare.toFixed(0), 10)}${pad(bare.toFixed(0), 13)}${pad(ratio.toFixed(2), 8)}`);
    }
  }
}

// ---------------------------------------------------------------- 2. CLI, 1 GiB

interface Measured {
  seconds: number;
  /** Peak resident set size in bytes, when it could be measured. */
  peakRss: number | undefined;
  code: number | null;
  stderr: string;
}

const TIME = '/usr/bin/time';

function hasGnuTime(): boolean {
  try {
    fs.accessSync(TIME, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Runs a command, timing it; peak memory from `/usr/bin/time -v`, else by polling VmHWM. */
function measure(command: string, args: string[]): Promise<Measured> {
  const useTime = hasGnuTime();
  const [file, fileArgs] = useTime ? [TIME, ['-v', command, ...args]] : [command, args];
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const child = spawn(file, fileArgs, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    let polled: number | undefined;
    const poll = useTime
      ? undefined
      : setInterval(() => {
          try {
            const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${child.pid}/status`, 'utf8'));
            if (m) polled = Math.max(polled ?? 0, Number(m[1]) * 1024);
          } catch {
            // exited between polls
          }
        }, 20);
    child.on('error', reject);
    child.on('close', (code) => {
      if (poll) clearInterval(poll);
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      const m = /Maximum resident set size \(kbytes\): (\d+)/.exec(stderr);
      resolve({ seconds, peakRss: useTime ? (m ? Number(m[1]) * 1024 : undefined) : polled, code, stderr });
    });
  });
}

async function writeInput(file: string, size: number): Promise<string> {
  const hash = crypto.createHash('sha256');
  const pattern = crypto.randomBytes(1024 * 1024 + 13);
  const out = fs.createWriteStream(file);
  const chunk = 1024 * 1024;
  for (let written = 0; written < size; ) {
    const buf = Buffer.allocUnsafe(Math.min(chunk, size - written));
    for (let filled = 0; filled < buf.length; ) {
      const from = (written + filled) % pattern.length;
      filled += pattern.copy(buf, filled, from, Math.min(pattern.length, from + buf.length - filled));
    }
    hash.update(buf);
    written += buf.length;
    if (!out.write(buf)) await new Promise<void>((resolve) => out.once('drain', () => resolve()));
  }
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
  return hash.digest('hex');
}

async function hashFile(file: string): Promise<string> {
  const hash = crypto.createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1024 * 1024 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function benchCli(): Promise<void> {
  const label = `CLI encrypt/decrypt of ${CLI_BYTES / 1048576} MiB (master mode, key file)`;
  if (!fs.existsSync(CLI)) {
    console.log(`${label}: skipped: CLI not built (${path.relative(process.cwd(), CLI)} missing)`);
    return;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'darefs-bench-'));
  const cleanup = (): void => fs.rmSync(dir, { recursive: true, force: true });
  const onSignal = (): void => {
    cleanup();
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  try {
    const keyfile = path.join(dir, 'master.key');
    fs.writeFileSync(keyfile, crypto.randomBytes(32), { mode: 0o600 });
    const plain = path.join(dir, 'plain.bin');
    const sealed = path.join(dir, 'sealed.dare');
    const back = path.join(dir, 'back.bin');
    const inputHash = await writeInput(plain, CLI_BYTES);
    console.log(`${label}; peak memory by ${hasGnuTime() ? `${TIME} -v` : 'polling /proc/PID/status VmHWM'}`);
    console.log(`${'op'.padEnd(9)}${pad('MB/s', 8)}${pad('seconds', 9)}${pad('peak RSS', 11)}`);
    const rows: Array<[string, string, string]> = [
      ['encrypt', plain, sealed],
      ['decrypt', sealed, back],
    ];
    for (const [op, input, output] of rows) {
      const r = await measure(process.execPath, [CLI, op, '--keyfile', keyfile, input, output]);
      if (r.code !== 0) {
        console.log(`${op.padEnd(9)}failed with exit code ${r.code}: ${r.stderr.trim().split('\n').slice(0, 3).join(' | ')}`);
        return;
      }
      const peak = r.peakRss === undefined ? 'n/a' : `${(r.peakRss / 1048576).toFixed(0)} MiB`;
      console.log(`${op.padEnd(9)}${pad(mbps(CLI_BYTES, r.seconds).toFixed(0), 8)}${pad(r.seconds.toFixed(2), 9)}${pad(peak, 11)}`);
    }
    const sealedSize = fs.statSync(sealed).size;
    const sizeNote = sealedSize === cipherSize(CLI_BYTES) ? 'cipher size as the format says' : `cipher size ${sealedSize}, expected ${cipherSize(CLI_BYTES)}`;
    const same = (await hashFile(back)) === inputHash;
    console.log(`round trip: ${same ? 'plaintext identical' : 'PLAINTEXT DIFFERS'}; ${sizeNote}`);
    if (!same) process.exitCode = 1;
  } finally {
    process.removeListener('SIGINT', onSignal);
    cleanup();
  }
}

async function main(): Promise<void> {
  console.log(`node ${process.version}, ${os.cpus().length} CPU(s): ${os.cpus()[0]?.model ?? 'unknown'}${quick ? ' (--quick)' : ''}`);
  benchCodec();
  console.log('');
  await benchCli();
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
