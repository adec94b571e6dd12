/** Errors of the store layer; src/fuse/errno.ts maps each kind to one errno. */
export class StoreError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** A change was asked of a read-only volume. */
export class ReadOnlyError extends StoreError {
  constructor(what: string) {
    super(`${what}: the volume is mounted read-only`);
  }
}

/** Used after close: a bug in the caller, never a user error. */
export class ClosedFileError extends StoreError {
  constructor(path: string) {
    super(`${path}: file already closed`);
  }
}

/**
 * A cipher path that would leave the cipher directory or pass through a symlink (FORMAT.md §6):
 * whoever else writes there planted it. Refused, never followed.
 */
export class UnsafePathError extends StoreError {
  constructor(
    readonly path: string,
    why: string,
  ) {
    super(`${path} ${why}: refused (the cipher directory is not trusted)`);
  }
}

/** Something other than a regular file (a FIFO, a device, a directory) where a cipher file should be. */
export class NotRegularFileError extends StoreError {
  constructor(
    readonly path: string,
    st: { mode: number },
  ) {
    super(`${path} is not a regular file (mode ${(st.mode & 0o170000).toString(8).padStart(6, '0')}): not a cipher file`);
  }
}

/**
 * The password or key could not be checked before mounting: the cipher directory has entries but
 * no file with a well-formed package 0 to try it on. Mounting anyway could seal new files under a
 * wrong password, so it takes an explicit `--no-password-check`.
 */
export class PasswordUncheckedError extends StoreError {
  readonly cipherDir: string;

  constructor(cipherDir: string, what: 'password' | 'key file', detail: string) {
    super(
      `cannot check the ${what} for ${cipherDir}: ${detail}, so a wrong ${what} would go unnoticed and new files ` +
        `would be sealed under it; refusing to mount (pass --no-password-check to mount anyway)`,
    );
    this.cipherDir = cipherDir;
  }
}

/**
 * A cipher file of 1 to 31 bytes: less than its 32-byte prefix, so it holds no content (a crash
 * tore the write of its prefix). `darefs fsck --repair` makes it an empty file.
 */
export class ShortCipherFileError extends StoreError {
  constructor(
    readonly path: string,
    readonly size: number,
  ) {
    super(
      `${path}: the cipher file is ${size} byte${size === 1 ? '' : 's'}, shorter than its 32-byte prefix, so it holds no content ` +
        '(a crash while its prefix was written): darefs fsck --repair makes it an empty file',
    );
  }
}

/**
 * A plaintext name a plain-names volume cannot store: its bytes are not UTF-8 (node:fs takes
 * names as strings). An encrypted-names volume stores any name (it seals the bytes).
 */
export class UnrepresentableNameError extends StoreError {
  constructor(readonly plainName: string) {
    super(`${JSON.stringify(plainName)}: a name that is not UTF-8 needs a volume with encrypted names (darefs init --encrypt-names)`);
  }
}

/** A name too long to store: its sealed form would not fit (an extended attribute name). */
export class NameTooLongError extends StoreError {
  constructor(what: string, bytes: number, max: number) {
    super(`${what}: ${bytes} bytes, at most ${max} can be stored sealed`);
  }
}

/** A file name longer than NAME_MAX (255 bytes): no file system takes it, sealed or not. */
export class FileNameTooLongError extends StoreError {
  constructor(bytes: number) {
    super(`a name of ${bytes} bytes: at most 255 bytes`);
  }
}

/** An extended attribute name this volume cannot store (EINVAL, as setxattr(2) for a bad name). */
export class InvalidAttrNameError extends StoreError {
  constructor(
    readonly attribute: string,
    reason: string,
  ) {
    super(`extended attribute ${JSON.stringify(attribute)}: ${reason}`);
  }
}

/** An extended attribute name no stored attribute can have on this volume (ENODATA). */
export class NoSuchAttributeError extends StoreError {
  constructor(
    readonly attribute: string,
    reason: string,
  ) {
    super(`extended attribute ${JSON.stringify(attribute)}: no such attribute (${reason})`);
  }
}

/**
 * A sealed extended attribute value that does not authenticate (FORMAT.md §8): planted or
 * modified by whoever else writes to the cipher directory. Never returned; the message names the
 * plaintext path and attribute, never what is stored.
 */
export class SealedAttrError extends StoreError {
  constructor(
    readonly path: string,
    readonly attribute: string,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(
      `${path}: extended attribute ${JSON.stringify(attribute)}: ${reason}: not shown (darefs seals user.* attribute values ` +
        'on this volume; this one was not written through darefs, or was modified)',
    );
    if (options) this.cause = options.cause;
  }
}
