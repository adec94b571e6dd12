// Typed errors of the key layer. The CLI maps `code` to exit codes and the
// mount refuses to start on any of them, so each message says what the user
// can do next. Messages never contain secret material.

export type KeyErrorCode =
  | 'EBADPASS'
  | 'ECONFIG'
  | 'ECONFIGEXISTS'
  | 'EKEYFILE'
  | 'ESECRET'
  | 'EDISPOSED';

export class KeyError extends Error {
  readonly code: KeyErrorCode;

  constructor(code: KeyErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/**
 * The secret does not open the volume: the sealed master key failed GCM
 * authentication, or the key file does not match the config's key check.
 * Raised from the config alone, before any file is touched.
 */
export class WrongPasswordError extends KeyError {
  readonly cipherDir: string;

  /**
   * `settingsFile`: the config, relative to cipherDir, whose settings are bound to the key
   * (FORMAT.md §4). The key check cannot tell a wrong secret from a changed setting, so the
   * message names both.
   */
  constructor(cipherDir: string, what: 'password' | 'key file' = 'password', settingsFile?: string) {
    super(
      'EBADPASS',
      settingsFile === undefined
        ? `wrong ${what} for ${cipherDir}`
        : `wrong ${what} for ${cipherDir} (or its settings in ${settingsFile} were changed: they are bound to the key)`,
    );
    this.cipherDir = cipherDir;
  }
}

/** The volume config is missing, unreadable, malformed or from a newer darefs. */
export class ConfigError extends KeyError {
  readonly path: string;

  constructor(path: string, message: string, options?: { cause?: unknown }) {
    super('ECONFIG', message, options);
    this.path = path;
  }
}

/** `darefs init` refuses to overwrite an existing volume config (and its master key). */
export class ConfigExistsError extends KeyError {
  readonly path: string;

  constructor(path: string) {
    super(
      'ECONFIGEXISTS',
      `${path} already exists: this directory is already a darefs volume; ` +
        'refusing to replace its config (that would lose the master key)',
    );
    this.path = path;
  }
}

/** A key file that is not 32 raw bytes or 64 hex characters, or cannot be read. */
export class KeyFileError extends KeyError {
  readonly path: string;

  constructor(path: string, message: string, options?: { cause?: unknown }) {
    super('EKEYFILE', message, options);
    this.path = path;
  }
}

/**
 * The caller did not supply the kind of secret the volume needs (e.g. a key
 * file for a passphrase volume). Distinct from a wrong secret so the CLI can
 * prompt or explain instead of reporting "wrong password".
 */
export class SecretRequiredError extends KeyError {
  readonly cipherDir: string;
  readonly needs: 'passphrase' | 'keyfile';

  constructor(cipherDir: string, needs: 'passphrase' | 'keyfile') {
    super(
      'ESECRET',
      needs === 'passphrase'
        ? `${cipherDir} is sealed with a passphrase: provide the passphrase`
        : `${cipherDir} uses an external key file: provide it with --keyfile`,
    );
    this.cipherDir = cipherDir;
    this.needs = needs;
  }
}

/** A deriver or key cache was used after dispose(): its secrets are already zeroed. */
export class DisposedError extends KeyError {
  constructor(what: string) {
    super('EDISPOSED', `${what} was used after dispose()`);
  }
}
