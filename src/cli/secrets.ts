// Where passwords and keys come from. In order: --passfile FILE (its first
// line), --extpass CMD (first line of its output), the environment variable
// DAREFS_PASSWORD, else a prompt without echo on the terminal. Secrets are
// Buffers so callers can zero them; none is ever printed, logged, or put in a
// child process's argv or environment.

import { spawn } from 'node:child_process';
import { timingSafeEqual } from 'node:crypto';
import * as fs from 'node:fs';
import * as tty from 'node:tty';
import {
  ConfigError,
  configPath,
  masterDeriver,
  ncryptDeriver,
  readConfig,
  readKeyFile,
  unlockMasterKey,
  type KeyDeriver,
  type MasterKdf,
  type VolumeConfig,
  type VolumeSecret,
} from '../keys';
import { defineOptions } from './args';
import { CliError, InterruptedError, UsageError, ioError } from './errors';
import { ExitCode } from './exit-codes';
import { loadSysCalls } from '../sys';
import { nameSchemeOf, type NameScheme } from '../store';

export const PASSWORD_ENV = 'DAREFS_PASSWORD';
export const NEW_PASSWORD_ENV = 'DAREFS_NEW_PASSWORD';
const MAX_SECRET_BYTES = 64 * 1024;

const taken: Record<string, string | undefined> = {};

/**
 * Moves DAREFS_PASSWORD and DAREFS_NEW_PASSWORD out of process.env (idempotent; main() calls it
 * first thing), so that no child we start inherits them: a background daemon, an --extpass
 * command, fusermount. Whether or not the command reads them. The kernel's copy of the original
 * environment (/proc/PID/environ) is not ours to change: --passfile or --extpass avoid it.
 * Returns the variables taken, for getPassword; a value is handed out once.
 */
export function takeSecretEnv(): Record<string, string | undefined> {
  for (const name of [PASSWORD_ENV, NEW_PASSWORD_ENV]) {
    const value = process.env[name];
    if (value !== undefined) {
      taken[name] = value;
      delete process.env[name];
      // The kernel's copy of the environment (/proc/PID/environ) still holds it: zero it there.
      try {
        loadSysCalls().calls?.scrubenv(name);
      } catch {
        // the README says so: prefer --passfile
      }
    }
  }
  return taken;
}

/** Options every command that needs a password accepts. */
export const PASSWORD_OPTIONS = defineOptions([
  { name: 'passfile', value: 'FILE', help: 'read the password from the first line of FILE' },
  { name: 'extpass', value: 'CMD', help: 'run CMD with /bin/sh -c and use the first line of its output as the password' },
] as const);

/** --keyfile: a 32-byte master key (32 raw bytes or 64 hex characters). */
export const KEYFILE_OPTION = {
  name: 'keyfile',
  value: 'FILE',
  help: 'master key file (32 raw bytes or 64 hex characters): master mode without a passphrase',
} as const;

export interface PasswordOptions {
  passfile?: string;
  extpass?: string;
  /** Where DAREFS_PASSWORD is looked up; by default what takeSecretEnv took from process.env. */
  env?: NodeJS.ProcessEnv;
  /** Prompt text, 'Password: ' by default. */
  prompt?: string;
  /** Ask twice on a terminal (init); the two must match. */
  confirm?: boolean;
  /** 'password' or 'passphrase', for messages. */
  noun?: string;
  /** Command name for usage errors. */
  command?: string;
}

export interface VolumeSecretOptions extends PasswordOptions {
  keyfile?: string;
}

/** Bytes of `data` up to its first newline (a CR before it is dropped too). */
function firstLine(data: Buffer): Buffer {
  let end = data.indexOf(0x0a);
  if (end === -1) end = data.length;
  if (end > 0 && data[end - 1] === 0x0d) end--;
  return Buffer.from(data.subarray(0, end));
}

async function fromPassfile(file: string, noun: string): Promise<Buffer> {
  let data: Buffer;
  try {
    const h = await fs.promises.open(file, 'r');
    try {
      const st = await h.stat();
      if (st.isDirectory()) throw new CliError(`cannot read --passfile ${file}: it is a directory`, ExitCode.ERROR);
      // Read up to the first newline (a FIFO such as <(pass show x) may deliver it in pieces).
      const buf = Buffer.alloc(MAX_SECRET_BYTES);
      let filled = 0;
      while (filled < buf.length && buf.subarray(0, filled).indexOf(0x0a) === -1) {
        const { bytesRead } = await h.read(buf, filled, buf.length - filled, null);
        if (bytesRead === 0) break;
        filled += bytesRead;
      }
      data = buf.subarray(0, filled);
    } finally {
      await h.close();
    }
  } catch (err) {
    throw ioError(err, 'cannot read --passfile', file);
  }
  try {
    const line = firstLine(data);
    if (line.length === 0) throw new CliError(`--passfile ${file}: the first line is empty; put the ${noun} on it`, ExitCode.WRONG_KEY);
    return line;
  } finally {
    data.fill(0);
  }
}

function fromExtpass(command: string, noun: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    // Standard input stays with us unless it is a terminal (the command may want to prompt);
    // it may be the data being encrypted.
    const child = spawn('/bin/sh', ['-c', command], {
      stdio: [process.stdin.isTTY ? 'inherit' : 'ignore', 'pipe', 'inherit'],
    });
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLong = false;
    const wipe = (): void => chunks.forEach((c) => c.fill(0));
    child.stdout.on('data', (chunk: Buffer) => {
      if (tooLong) return;
      size += chunk.length;
      chunks.push(chunk);
      if (size > MAX_SECRET_BYTES) {
        tooLong = true;
        child.kill('SIGTERM');
      }
    });
    child.on('error', (err) => {
      wipe();
      reject(new CliError(`cannot run the --extpass command: ${err.message}`, ExitCode.ERROR, { cause: err }));
    });
    child.on('close', (code, signal) => {
      const all = Buffer.concat(chunks);
      wipe();
      try {
        if (tooLong) throw new CliError(`the --extpass command printed more than ${MAX_SECRET_BYTES} bytes`, ExitCode.ERROR);
        if (code !== 0) {
          const how = signal !== null ? `was killed by ${signal}` : `exited with status ${code}`;
          throw new CliError(`the --extpass command ${how}; no ${noun} read`, ExitCode.ERROR);
        }
        const line = firstLine(all);
        if (line.length === 0) throw new CliError(`the --extpass command printed an empty ${noun}`, ExitCode.WRONG_KEY);
        resolve(line);
      } catch (err) {
        reject(err);
      } finally {
        all.fill(0);
      }
    });
  });
}

// ---- the interactive prompt ----

interface Terminal {
  input: tty.ReadStream;
  write(text: string): void;
  close(): Promise<void>;
}

/**
 * The terminal to prompt on: /dev/tty when we have a controlling terminal and
 * stdin or stderr is a terminal (so `cat x | darefs encrypt > y` still
 * prompts), else stdin when it is a terminal. Null when there is none.
 */
function openTerminal(): Terminal | null {
  if (process.stdin.isTTY || process.stderr.isTTY) {
    let fd: number | undefined;
    try {
      fd = fs.openSync('/dev/tty', 'r+');
      if (!tty.isatty(fd)) throw new Error('not a tty');
      const ttyFd = fd;
      const input = new tty.ReadStream(ttyFd);
      return {
        input,
        write: (text) => {
          fs.writeSync(ttyFd, text);
        },
        // libuv reopens the terminal for its own handle and closes only that one: ours is closed after it.
        close: () =>
          new Promise<void>((resolve) => {
            input.once('close', () => {
              try {
                fs.closeSync(ttyFd);
              } catch {
                // already closed
              }
              resolve();
            });
            input.destroy();
          }),
      };
    } catch {
      if (fd !== undefined) {
        try {
          fs.closeSync(fd);
        } catch {
          // ignore
        }
      }
    }
  }
  if (process.stdin.isTTY) {
    const input = process.stdin as tty.ReadStream;
    return {
      input,
      write: (text) => {
        process.stderr.write(text);
      },
      close: async () => {
        input.pause();
      },
    };
  }
  return null;
}

/** Whether an interactive prompt is possible. */
export function canPrompt(): boolean {
  return process.stdin.isTTY === true || (process.stderr.isTTY === true && fs.existsSync('/dev/tty'));
}

/** Growable secret buffer that zeroes what it discards. */
class SecretBuffer {
  private buf = Buffer.alloc(256);
  length = 0;

  push(byte: number): void {
    if (this.length === this.buf.length) {
      const bigger = Buffer.alloc(this.buf.length * 2);
      this.buf.copy(bigger);
      this.buf.fill(0);
      this.buf = bigger;
    }
    this.buf[this.length++] = byte;
  }

  /** Removes the last UTF-8 character. */
  backspace(): void {
    while (this.length > 0 && (this.buf[this.length - 1] & 0xc0) === 0x80) this.buf[--this.length] = 0;
    if (this.length > 0) this.buf[--this.length] = 0;
  }

  clear(): void {
    this.buf.fill(0);
    this.length = 0;
  }

  take(): Buffer {
    const out = Buffer.from(this.buf.subarray(0, this.length));
    this.clear();
    return out;
  }
}

/**
 * Reads one line from the terminal in raw mode without echo. Backspace/DEL
 * erase a character, Ctrl-U the line; Ctrl-C aborts (InterruptedError),
 * Ctrl-D on an empty line aborts too; escape sequences (arrow keys) are ignored.
 */
async function readHidden(term: Terminal, prompt: string): Promise<Buffer> {
  const { input } = term;
  const secret = new SecretBuffer();
  const wasRaw = input.isRaw;
  // Echo off before the prompt shows, so nothing typed after it is ever echoed.
  input.setRawMode(true);
  term.write(prompt);
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      // 0: normal, 1: after ESC, 2: inside a CSI/SS3 sequence
      let escape = 0;
      const finish = (err: Error | null): void => {
        input.off('data', onData);
        input.off('end', onEnd);
        input.off('error', onError);
        input.pause();
        term.write('\n');
        if (err !== null) {
          secret.clear();
          reject(err);
        } else {
          resolve(secret.take());
        }
      };
      const onData = (chunk: Buffer): void => {
        for (let i = 0; i < chunk.length; i++) {
          const b = chunk[i];
          if (escape === 1) {
            escape = b === 0x5b || b === 0x4f ? 2 : 0;
            continue;
          }
          if (escape === 2) {
            if (b >= 0x40 && b <= 0x7e) escape = 0;
            continue;
          }
          if (b === 0x0d || b === 0x0a) {
            chunk.fill(0);
            finish(null);
            return;
          }
          if (b === 0x03) {
            chunk.fill(0);
            finish(new InterruptedError('SIGINT'));
            return;
          }
          if (b === 0x04) {
            if (secret.length === 0) {
              finish(new CliError('no password entered (end of input at the prompt)', ExitCode.WRONG_KEY));
              return;
            }
            continue;
          }
          if (b === 0x7f || b === 0x08) secret.backspace();
          else if (b === 0x15) secret.clear();
          else if (b === 0x1b) escape = 1;
          else if (b >= 0x20) secret.push(b);
        }
        chunk.fill(0);
      };
      const onEnd = (): void => finish(new CliError('the terminal closed before a password was entered', ExitCode.WRONG_KEY));
      const onError = (err: Error): void => finish(new CliError(`cannot read the password from the terminal: ${err.message}`, ExitCode.ERROR));
      input.on('data', onData);
      input.on('end', onEnd);
      input.on('error', onError);
      input.resume();
    });
  } finally {
    input.setRawMode(wasRaw);
  }
}

async function fromPrompt(opts: PasswordOptions, noun: string): Promise<Buffer> {
  const term = openTerminal();
  if (term === null) {
    throw new UsageError(`no ${noun}: use --passfile, --extpass or ${PASSWORD_ENV} (standard input is not a terminal)`, opts.command);
  }
  try {
    const prompt = opts.prompt ?? `${noun[0].toUpperCase()}${noun.slice(1)}: `;
    const first = await readHidden(term, prompt);
    if (first.length === 0) throw new CliError(`empty ${noun}`, ExitCode.WRONG_KEY);
    if (!opts.confirm) return first;
    const second = await readHidden(term, `Repeat ${noun}: `);
    try {
      if (first.length !== second.length || !timingSafeEqual(first, second)) {
        first.fill(0);
        throw new CliError(`the two ${noun}s do not match; nothing was changed`, ExitCode.WRONG_KEY);
      }
      return first;
    } finally {
      second.fill(0);
    }
  } finally {
    await term.close();
  }
}

/**
 * The password or passphrase, from the first source available (see the top of
 * this file). The caller owns the returned Buffer and zeroes it after use.
 */
export async function getPassword(opts: PasswordOptions = {}): Promise<Buffer> {
  const noun = opts.noun ?? 'password';
  if (opts.passfile !== undefined && opts.extpass !== undefined) {
    throw new UsageError('give either --passfile or --extpass, not both', opts.command);
  }
  if (opts.passfile !== undefined) return fromPassfile(opts.passfile, noun);
  if (opts.extpass !== undefined) return fromExtpass(opts.extpass, noun);
  const env = opts.env ?? takeSecretEnv();
  const fromEnv = env[PASSWORD_ENV];
  if (fromEnv !== undefined) {
    delete env[PASSWORD_ENV];
    if (fromEnv.length === 0) throw new CliError(`${PASSWORD_ENV} is set but empty`, ExitCode.WRONG_KEY);
    return Buffer.from(fromEnv, 'utf8');
  }
  return fromPrompt(opts, noun);
}

/**
 * The secret that unlocks a volume's master key: the key file (--keyfile) for
 * a key-file volume, the passphrase otherwise. The caller zeroes the buffers.
 */
export async function getVolumeSecret(config: VolumeConfig, cipherDir: string, opts: VolumeSecretOptions): Promise<VolumeSecret> {
  if (config.masterKeySource === 'keyfile') {
    if (opts.keyfile === undefined) {
      throw new UsageError(`${cipherDir} uses an external key file: give it with --keyfile FILE`, opts.command);
    }
    if (opts.passfile !== undefined || opts.extpass !== undefined) {
      throw new UsageError(`${cipherDir} uses a key file, not a passphrase: drop --passfile/--extpass`, opts.command);
    }
    return { keyFile: await readKeyFile(opts.keyfile) };
  }
  if (opts.keyfile !== undefined) {
    throw new UsageError(`${cipherDir} is sealed with a passphrase, not a key file: drop --keyfile`, opts.command);
  }
  return { passphrase: await getPassword({ noun: 'passphrase', ...opts }) };
}

export interface UnlockedVolume {
  config: VolumeConfig;
  /** 32 bytes; the caller zeroes it (or hands it to masterDeriver and zeroes its own copy). */
  masterKey: Buffer;
}

/**
 * Reads CIPHERDIR's config, gets the secret and unlocks the master key. A
 * wrong secret fails here (WrongPasswordError, exit 3), before any file is
 * touched; a directory without a config is a ConfigError (exit 7).
 */
export async function unlockVolume(cipherDir: string, opts: VolumeSecretOptions): Promise<UnlockedVolume> {
  const config = await readConfig(cipherDir);
  if (config === null) {
    const st = await fs.promises.stat(cipherDir).catch(() => null);
    if (st === null || !st.isDirectory()) {
      throw new ConfigError(configPath(cipherDir), `volume ${cipherDir} does not exist or is not a directory`);
    }
    throw new ConfigError(
      configPath(cipherDir),
      `${cipherDir} is not a darefs volume (no ${configPath(cipherDir)}): run 'darefs init ${cipherDir}' first, or use --ncrypt for ncrypt files`,
    );
  }
  const secret = await getVolumeSecret(config, cipherDir, opts);
  try {
    return { config, masterKey: await unlockMasterKey(config, cipherDir, secret) };
  } finally {
    secret.passphrase?.fill(0);
    secret.keyFile?.fill(0);
  }
}

// ---- key modes of the single-file commands (encrypt, decrypt) ----

export const KEY_MODE_OPTIONS = defineOptions([
  { name: 'ncrypt', help: "ncrypt mode: key = scrypt(password, file prefix), like sio's ncrypt (the default)" },
  { name: 'volume', value: 'CIPHERDIR', help: "master mode with the key of a darefs volume (its passphrase or --keyfile)" },
  KEYFILE_OPTION,
  { name: 'kdf', value: 'KDF', choices: ['hmac-sha256', 'hkdf-sha256'], help: 'with --keyfile alone: hmac-sha256 (default) or hkdf-sha256' },
  ...PASSWORD_OPTIONS,
] as const);

export interface KeyModeOptions {
  ncrypt: boolean;
  volume?: string;
  keyfile?: string;
  kdf?: string;
  passfile?: string;
  extpass?: string;
  command?: string;
  /** With --volume: also the volume's name scheme (decrypt --path). */
  names?: boolean;
}

export interface ResolvedKeys {
  mode: 'ncrypt' | 'master';
  /** Derives each stream's key from its prefix; dispose() when done. */
  deriver: KeyDeriver;
  /** The volume's config with --volume. */
  config?: VolumeConfig;
  /** With --volume and `names`: how the volume stores names (FORMAT.md §8); dispose() when done. */
  names?: NameScheme;
}

/** Rejects contradictory key options; synchronous, before any file or secret is touched. */
export function checkKeyModeOptions(o: KeyModeOptions): void {
  const usage = (m: string): UsageError => new UsageError(m, o.command);
  if (o.ncrypt && (o.volume !== undefined || o.keyfile !== undefined)) {
    throw usage(`--ncrypt cannot be combined with ${o.volume !== undefined ? '--volume' : '--keyfile'}: ncrypt mode uses a password only`);
  }
  if (o.kdf !== undefined) {
    if (o.volume !== undefined) throw usage('--kdf is a volume setting: with --volume the kdf comes from the volume config');
    if (o.keyfile === undefined) throw usage('--kdf applies to master mode only: use it with --keyfile');
  }
  if (o.volume === undefined && o.keyfile !== undefined && (o.passfile !== undefined || o.extpass !== undefined)) {
    throw usage('--keyfile needs no password: drop --passfile/--extpass');
  }
}

/**
 * The key deriver for --ncrypt (password), --volume CIPHERDIR (the volume's
 * master key and kdf; wrong secret: exit 3 here, before any file is touched)
 * or --keyfile FILE alone (master mode, --kdf).
 */
export async function resolveKeys(o: KeyModeOptions): Promise<ResolvedKeys> {
  checkKeyModeOptions(o);
  if (o.volume !== undefined) {
    const { config, masterKey } = await unlockVolume(o.volume, { keyfile: o.keyfile, passfile: o.passfile, extpass: o.extpass, command: o.command });
    try {
      const names = o.names ? nameSchemeOf(config, masterKey) : undefined;
      return { mode: 'master', deriver: masterDeriver(masterKey, config.kdf), config, names };
    } finally {
      masterKey.fill(0);
    }
  }
  if (o.keyfile !== undefined) {
    const key = await readKeyFile(o.keyfile);
    try {
      return { mode: 'master', deriver: masterDeriver(key, (o.kdf ?? 'hmac-sha256') as MasterKdf) };
    } finally {
      key.fill(0);
    }
  }
  const password = await getPassword({ passfile: o.passfile, extpass: o.extpass, command: o.command });
  try {
    return { mode: 'ncrypt', deriver: ncryptDeriver(password) };
  } finally {
    password.fill(0);
  }
}
