import {
  AuthenticationError,
  Cipher,
  HEADER_SIZE,
  TAG_SIZE,
  Version,
  cipherFromName,
  openPackage,
  packageCount,
  payloadLength,
  versionFromName,
} from '../dare';
import {
  CONFIG_DIR,
  ConfigError,
  KeyCache,
  journalKey,
  KeyDeriver,
  MasterKdf,
  VolumeConfig,
  WrongPasswordError,
  masterDeriver,
  ncryptDeriver,
  readConfig,
  unlockMasterKey,
} from '../keys';
import { StoreSettings } from './cipher-file';
import type { JournalInspection, ReplayResult } from './journal';
import { PasswordUncheckedError } from './errors';
import { findSamplePackages } from './probe';
import { NameScheme, nameSchemeOf } from './names';
import { Volume } from './volume';

export type KeyMode = 'ncrypt' | 'master';

export interface VolumeSecrets {
  passphrase?: Buffer;
  /** The 32-byte master key read from a key file. */
  keyFile?: Buffer;
}

export interface OpenVolumeOptions {
  cipherDir: string;
  /** `ncrypt` insists on a plain directory of ncrypt files; `auto` follows the config. */
  mode: 'auto' | 'ncrypt';
  secrets: VolumeSecrets;
  readOnly: boolean;
  packageCacheBytes?: number;
  dirtyBytes?: number;
  maxKeys?: number;
  /** Master mode without a config (key file only). */
  kdf?: MasterKdf;
  /** Journal in-place rewrites (crash safety); default true. `mount --no-journal` turns it off. */
  journal?: boolean;
  /** Milliseconds between checkpoints of the journal (Volume's commitInterval); default 5000. */
  commitInterval?: number;
  /** Told of a timed checkpoint that failed. */
  onCheckpointError?: (err: unknown) => void;
  /**
   * Without a config (ncrypt mode, key file alone), try the secret on sample files; default true.
   * false (`mount --no-password-check`) skips it: a wrong secret then mounts.
   */
  passwordCheck?: boolean;
}

/** What opening found of an earlier crash. */
export interface Recovery {
  /** Read-write: what the journal replay did (packages 0 and not discarded: nothing to do). */
  replayed?: ReplayResult;
  /** Read-only: a batch left in the journal that only a read-write mount or fsck --repair applies. */
  pending?: JournalInspection;
}

export interface OpenedVolume {
  volume: Volume;
  keys: KeyCache;
  mode: KeyMode;
  config: VolumeConfig | null;
  recovery: Recovery;
  /** Zeroes every key; the volume must not be used afterwards. */
  dispose(): void;
}

/** A line for the log; `problem` ones are warnings. */
export interface RecoveryLine {
  text: string;
  problem: boolean;
}

/**
 * The log lines about what `recovery` says (none when there is nothing to say): what the replay
 * did, and every journal record it skipped or batch it discarded (path and reason: whoever else
 * writes the cipher directory may have planted them).
 */
export function describeRecovery(r: Recovery): RecoveryLine[] {
  const files = (n: number): string => `${n} file${n === 1 ? '' : 's'}`;
  const lines: RecoveryLine[] = [];
  const replayed = r.replayed;
  if (replayed?.discarded) {
    lines.push({ text: `discarded the journal batch without applying any of it: ${replayed.reason ?? 'a torn batch'}`, problem: !replayed.benign });
  }
  if (replayed && replayed.files.length > 0) {
    lines.push({
      text: `replayed ${replayed.packages} package${replayed.packages === 1 ? '' : 's'} of ${files(replayed.files.length)} from the journal after an unclean shutdown`,
      problem: false,
    });
  }
  for (const s of replayed?.skipped ?? []) {
    lines.push({ text: `journal record for ${JSON.stringify(s.path)} skipped, nothing written: ${s.reason}`, problem: s.benign !== true });
  }
  const p = r.pending;
  if (p && (p.torn || p.files.length > 0)) {
    lines.push(
      p.torn
        ? { text: `the journal holds a batch that a read-write mount or darefs fsck --repair will drop unapplied: ${p.problem ?? 'a torn batch'}`, problem: false }
        : {
            text:
              `the journal holds ${p.packages} package${p.packages === 1 ? '' : 's'} of ${files(p.files.length)} from an interrupted write: ` +
              'until a read-write mount or darefs fsck --repair replays it, those packages may fail to read (EIO)',
            problem: false,
          },
    );
  }
  return lines;
}

export const DEFAULT_PACKAGE_CACHE_BYTES = 16 * 1024 * 1024;
export const DEFAULT_DIRTY_BYTES = 8 * 1024 * 1024;

/** Settings of a directory of ncrypt files: new and converted files are 1.0 (in-place writes). */
const NCRYPT_SETTINGS: StoreSettings = { newFileVersion: Version.V10, newFileCipher: Cipher.AES_256_GCM, convert2to1: true };

/**
 * Unlocks a cipher directory and opens its volume. A wrong password or key is detected here,
 * before anything is mounted: from the config in master mode, and without a config by opening
 * package 0 of sample files (checkKeyOnSamples). An empty directory cannot be checked, and mounts;
 * one with files of which none can be checked is refused unless `passwordCheck` is false.
 */
export async function openVolume(opts: OpenVolumeOptions): Promise<OpenedVolume> {
  const config = await readConfig(opts.cipherDir);
  let deriver: KeyDeriver;
  let mode: KeyMode;
  let settings: StoreSettings;
  /** Master mode: the journal's MAC key (the volume takes it over and zeroes it at close). */
  let journalMac: Buffer | undefined;
  /** Encrypted names: their keys (the volume's scheme takes them over). */
  let names: NameScheme | undefined;
  if (config) {
    if (opts.mode === 'ncrypt') {
      throw new ConfigError(opts.cipherDir, `${opts.cipherDir} is a darefs volume (it has ${CONFIG_DIR}/config.json): mount it without --ncrypt`);
    }
    // A read-write mount may write the cipher directory: it binds a legacy config's settings.
    const master = await unlockMasterKey(config, opts.cipherDir, opts.secrets, { upgrade: !opts.readOnly });
    deriver = masterDeriver(master, config.kdf);
    journalMac = journalKey(master);
    names = nameSchemeOf(config, master);
    master.fill(0);
    mode = 'master';
    settings = {
      newFileVersion: versionFromName(config.writeVersion),
      newFileCipher: cipherFromName(config.cipher),
      convert2to1: config.convert2to1,
    };
  } else if (opts.secrets.keyFile && opts.mode !== 'ncrypt') {
    deriver = masterDeriver(opts.secrets.keyFile, opts.kdf ?? 'hmac-sha256');
    journalMac = journalKey(opts.secrets.keyFile);
    mode = 'master';
    settings = NCRYPT_SETTINGS;
  } else if (opts.mode === 'ncrypt') {
    if (!opts.secrets.passphrase) throw new ConfigError(opts.cipherDir, 'ncrypt mode needs a password');
    deriver = ncryptDeriver(opts.secrets.passphrase);
    mode = 'ncrypt';
    settings = NCRYPT_SETTINGS;
  } else {
    throw new ConfigError(
      opts.cipherDir,
      `${opts.cipherDir} has no ${CONFIG_DIR}/config.json: create a volume with \`darefs init ${opts.cipherDir}\`, or pass --ncrypt to mount a directory of sio ncrypt files`,
    );
  }
  const keys = new KeyCache(deriver, { maxKeys: opts.maxKeys });
  try {
    if ((mode === 'ncrypt' || !config) && opts.passwordCheck !== false) await checkKeyOnSamples(opts.cipherDir, keys, mode);
  } catch (err) {
    keys.dispose();
    journalMac?.fill(0);
    names?.dispose();
    throw err;
  }
  const volume = new Volume({
    keys: { key: (prefix) => keys.get(prefix) },
    settings,
    readOnly: opts.readOnly,
    packageCacheBytes: opts.packageCacheBytes ?? DEFAULT_PACKAGE_CACHE_BYTES,
    dirtyBytes: opts.dirtyBytes ?? DEFAULT_DIRTY_BYTES,
    cipherDir: opts.cipherDir,
    journal: opts.journal,
    journalKey: journalMac,
    commitInterval: opts.commitInterval,
    onCheckpointError: opts.onCheckpointError,
    names,
  });
  // After the key check (a wrong password touches nothing), before anything is served: finish
  // the package rewrites a crash interrupted. A read-only volume only looks.
  const recovery: Recovery = {};
  try {
    if (opts.readOnly) {
      // Only a warning: a journal this process cannot read must not stop a read-only mount.
      try {
        recovery.pending = volume.inspectJournal();
      } catch {
        recovery.pending = undefined;
      }
    } else recovery.replayed = await volume.recover();
  } catch (err) {
    volume.close();
    keys.dispose();
    throw err;
  }
  return {
    volume,
    keys,
    mode,
    config,
    recovery,
    dispose: () => {
      volume.close();
      keys.dispose();
    },
  };
}

/** How many well-formed files the key is tried on before a wrong key is declared. */
const KEY_CHECK_SAMPLES = 3;

/**
 * The key is right when package 0 of some sample authenticates, wrong when every sample (at least
 * one) fails. Samples are files whose header parses (findSamplePackages): a junk file planted in
 * the cipher directory neither passes nor fails the check, and one file sealed under another
 * password does not refuse the right one. No sample at all in a directory that has files: refused
 * (PasswordUncheckedError), since a wrong key would then mount and seal new files under it.
 */
async function checkKeyOnSamples(cipherDir: string, keys: KeyCache, mode: KeyMode): Promise<void> {
  const what = mode === 'ncrypt' ? 'password' : 'key file';
  const probe = findSamplePackages(cipherDir, new Set([CONFIG_DIR]), { maxSamples: KEY_CHECK_SAMPLES });
  for (const sample of probe.samples) {
    const key = await keys.get(sample.prefix);
    try {
      const length = payloadLength(0, sample.plainSize);
      const pkg = sample.package0.subarray(0, HEADER_SIZE + length + TAG_SIZE);
      openPackage(key, pkg, { index: 0, payloadLength: length, last: packageCount(sample.plainSize) === 1, reference: pkg.subarray(0, HEADER_SIZE) }).fill(0);
      return;
    } catch (err) {
      // The header was checked when sampled: only the tag can fail here.
      if (!(err instanceof AuthenticationError)) throw err;
    } finally {
      key.fill(0);
    }
  }
  if (probe.samples.length > 0) throw new WrongPasswordError(cipherDir, what);
  if (probe.others > 0 || probe.limited) {
    const detail = probe.limited
      ? 'no file among the first entries of the directory has a well-formed DARE package'
      : `none of its ${probe.others} file${probe.others === 1 ? '' : 's'} has a well-formed DARE package (empty, too short, or not DARE)`;
    throw new PasswordUncheckedError(cipherDir, what, detail);
  }
}
