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
