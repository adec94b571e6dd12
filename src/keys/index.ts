// Public API of the key layer: per-stream key derivation, the key cache and
// the volume config. Nothing here depends on the DARE format code.

export {
  KeyError,
  WrongPasswordError,
  ConfigError,
  ConfigExistsError,
  KeyFileError,
  SecretRequiredError,
  DisposedError,
  type KeyErrorCode,
} from './errors';
export {
  PREFIX_SIZE,
  KEY_SIZE,
  NCRYPT_SCRYPT,
  ncryptKey,
  masterFileKey,
  journalKey,
  journalEntryKey,
  nameKeys,
  ncryptDeriver,
  masterDeriver,
  scryptAsync,
  type KeyDeriver,
  type MasterKdf,
  type ScryptParams,
} from './kdf';
export { KeyCache, DEFAULT_MAX_KEYS, type KeyCacheOptions, type KeyCacheStats } from './keycache';
export {
  CONFIG_DIR,
  CONFIG_FILE,
  FORMAT_VERSION,
  LEGACY_FORMAT_VERSION,
  settingsBinding,
  SEAL_SCRYPT,
  DEFAULTS,
  configPath,
  initVolume,
  readConfig,
  parseConfig,
  unlockMasterKey,
  changePassphrase,
  CONFIG_BACKUP,
  readKeyFile,
  type Cipher,
  type WriteVersion,
  type NameMode,
  type StoredScrypt,
  type VolumeConfig,
  type PassphraseVolumeConfig,
  type KeyfileVolumeConfig,
  type InitOptions,
  type VolumeSecret,
  type UnlockOptions,
} from './config';
export { UnsafeMetaDirError, checkMetaDirStat, openMetaDir, openMetaFile, readMetaFile, readOpenFile, type MetaDir } from './meta-dir';
