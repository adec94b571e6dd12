// `darefs init CIPHERDIR`: makes a directory a darefs volume (master mode) by
// writing CIPHERDIR/.darefs/config.json with a fresh master key sealed under a
// passphrase, or a key check for an external --keyfile.

import * as fs from 'node:fs';
import { CONFIG_DIR, configPath, ConfigExistsError, initVolume, readKeyFile, type InitOptions } from '../../keys';
import { defineOptions, expectPositionals, parseArgs, type Command } from '../args';
import { ioError, UsageError } from '../errors';
import { ExitCode } from '../exit-codes';
import { getPassword, KEYFILE_OPTION, PASSWORD_OPTIONS } from '../secrets';

const OPTIONS = defineOptions([
  { ...KEYFILE_OPTION, help: 'use this master key file (32 raw bytes or 64 hex chars) instead of a passphrase' },
  ...PASSWORD_OPTIONS,
  { name: 'cipher', value: 'CIPHER', choices: ['aes', 'chacha'], help: 'cipher of new files: aes (default) or chacha' },
  { name: 'kdf', value: 'KDF', choices: ['hmac-sha256', 'hkdf-sha256'], help: 'per-file key derivation: hmac-sha256 (default) or hkdf-sha256' },
  { name: 'dare-version', value: 'V', choices: ['1', '2', '1.0', '2.0'], help: 'DARE version of new files: 1 (default, allows in-place writes) or 2' },
  { name: 'keep-v2', help: 'do not rewrite existing DARE 2.0 files as 1.0 when they are modified (1.0 cannot detect a file cut short at a package boundary; 2.0 can)' },
  {
    name: 'encrypt-names',
    help:
      'store file and directory names (and user.* extended attributes) encrypted: listing CIPHERDIR shows opaque names. ' +
      'Contents stay sio-compatible file by file, but sio/ncrypt cannot tell which file is which without darefs ls',
  },
  { name: 'quiet', short: 'q', help: 'no warnings on stderr' },
] as const);

export const initCommand: Command = {
  name: 'init',
  summary: 'make a directory a darefs volume (master-key mode)',
  usage: ['init [options] CIPHERDIR'],
  description:
    'Creates CIPHERDIR if missing (mode 0700) and writes CIPHERDIR/.darefs/config.json: the volume settings and a new ' +
    'random master key sealed under a passphrase (asked twice on a terminal), or, with --keyfile, only a check value ' +
    'for that key. Refuses a directory that already has a config. A directory of files made by sio ncrypt needs no ' +
    'init: mount or decrypt it in ncrypt mode with the password. Names are plain by default: anyone who can list ' +
    'CIPHERDIR sees every file name, and each file still decrypts with sio/ncrypt by its own name. With ' +
    '--encrypt-names they are sealed (FORMAT.md §8; what stays visible: the tree shape, sizes, times, name lengths ' +
    'rounded up to 16 bytes, and which names are equal); choose it unless you need to find files in CIPHERDIR by name ' +
    'without darefs. ncrypt directories always have plain names. The setting cannot be changed later: export and ' +
    'import into a new volume to switch.',
  options: OPTIONS,
  examples: ['darefs init ~/cipher', 'darefs init --encrypt-names ~/vault', 'darefs init --passfile ~/.pw --cipher chacha ~/cipher', 'darefs init --keyfile master.key ~/cipher'],
  showExitCodes: true,
  async run(args) {
    const { options: o, positionals } = parseArgs(args, OPTIONS, 'init');
    expectPositionals(positionals, 1, 1, 'CIPHERDIR', 'init');
    const dir = positionals[0];
    if (o.keyfile !== undefined && (o.passfile !== undefined || o.extpass !== undefined)) {
      throw new UsageError('--keyfile and a passphrase (--passfile/--extpass) exclude each other: choose one', 'init');
    }

    // Refuse an existing volume before asking for anything.
    const existing = await fs.promises.lstat(configPath(dir)).catch(() => undefined);
    if (existing !== undefined) throw new ConfigExistsError(configPath(dir));
    try {
      await fs.promises.mkdir(dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw ioError(err, 'cannot create cipher directory', dir);
    }
    let entries: string[];
    try {
      entries = (await fs.promises.readdir(dir)).filter((e) => e !== CONFIG_DIR);
    } catch (err) {
      throw ioError(err, 'cannot read cipher directory', dir);
    }
    if (entries.length > 0 && !o.quiet) {
      process.stderr.write(
        `darefs: init: warning: ${dir} is not empty (${entries.length} entr${entries.length === 1 ? 'y' : 'ies'}): ` +
          'files already there, such as ones made by ncrypt, will not open in master mode\n',
      );
    }

    const settings: InitOptions = {
      cipher: o.cipher as InitOptions['cipher'],
      kdf: o.kdf as InitOptions['kdf'],
      writeVersion: o['dare-version'] === undefined ? undefined : o['dare-version'].startsWith('1') ? '1.0' : '2.0',
      convert2to1: o['keep-v2'] ? false : undefined,
      names: o['encrypt-names'] ? 'encrypted' : 'plain',
    };
    if (o.keyfile !== undefined) {
      const keyFile = await readKeyFile(o.keyfile);
      try {
        await initVolume(dir, { ...settings, keyFile });
      } finally {
        keyFile.fill(0);
      }
    } else {
      const passphrase = await getPassword({ passfile: o.passfile, extpass: o.extpass, confirm: true, noun: 'passphrase', command: 'init' });
      try {
        await initVolume(dir, { ...settings, passphrase });
      } finally {
        passphrase.fill(0);
      }
    }
    if (!o.quiet) process.stdout.write(`${dir} is now a darefs volume (config in ${configPath(dir)})\n`);
    return ExitCode.OK;
  },
};
