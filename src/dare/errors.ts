/**
 * One class per way a DARE stream can be rejected (FORMAT.md §3). Each names the package it was
 * found in, and the `sioError` text sio's own decryptor gives for the same input, so that tests
 * can check we reject exactly what the reference rejects.
 */
export abstract class DareError extends Error {
  /** File the stream came from, when known: set by the layer that knows it. */
  file: string | undefined;

  constructor(
    readonly packageIndex: number,
    readonly detail: string,
    /** sio's error text for the same input. */
    readonly sioError: string,
    /** What a user can do about it. */
    readonly advice: string,
  ) {
    super();
    this.name = new.target.name;
    this.message = this.compose();
  }

  /** Attaches the file name, so the message says where. */
  inFile(file: string): this {
    this.file = file;
    this.message = this.compose();
    return this;
  }

  private compose(): string {
    const where = this.file === undefined ? '' : ` of ${this.file}`;
    return `${this.detail} in package ${this.packageIndex}${where}: ${this.advice}`;
  }
}

export class AuthenticationError extends DareError {
  constructor(index: number) {
    super(index, 'authentication failed', 'sio: authentication failed', 'wrong password or key, or the file was modified');
  }
}

export class UnsupportedVersionError extends DareError {
  constructor(index: number, version: number) {
    super(index, `unsupported DARE version 0x${version.toString(16).padStart(2, '0')}`, 'sio: unsupported version', 'not a DARE 1.0/2.0 stream, or the file is corrupted');
  }
}

export class UnsupportedCipherError extends DareError {
  constructor(index: number, cipher: number, why = 'unsupported') {
    super(index, `${why} cipher suite 0x${cipher.toString(16).padStart(2, '0')}`, 'sio: unsupported cipher suite', 'the file is corrupted or was not written by sio or darefs');
  }
}

export class SequenceMismatchError extends DareError {
  constructor(index: number, found: number) {
    super(index, `sequence number ${found} where ${index} was expected`, 'sio: sequence number mismatch', 'packages were removed, reordered or duplicated: the file was modified');
  }
}

export class NonceMismatchError extends DareError {
  constructor(index: number) {
    super(index, 'header nonce differs from package 0', 'sio: header nonce mismatch', 'packages from another stream were mixed in: the file was modified');
  }
}

export class InvalidPayloadSizeError extends DareError {
  constructor(index: number, detail = 'invalid payload size') {
    super(index, detail, 'sio: invalid payload size', 'the file is truncated or corrupted');
  }
}

export class TruncatedStreamError extends DareError {
  constructor(index: number) {
    super(index, 'stream ends without a final package', 'sio: unexpected EOF', 'the file is truncated (its final package is missing)');
  }
}

export class DataAfterFinalError extends DareError {
  constructor(index: number) {
    super(index, 'unexpected data after the final package', 'sio: unexpected data after final package', 'data was appended to the file, or the file is corrupted');
  }
}

/**
 * A stream that must be DARE 2.0 (a sealed buffer, src/dare/sealed-buffer.ts) in another version:
 * sio with MinVersion 2.0 refuses it the same way.
 */
export class NotVersion20Error extends DareError {
  constructor(index: number, version: number) {
    super(index, `DARE version 0x${version.toString(16).padStart(2, '0')} where a 2.0 stream is required`, 'sio: unsupported version', 'it was modified, or not written by darefs');
  }
}

/** Random access only: a cipher size no regular stream can have (FORMAT.md §2). */
export class InvalidLengthError extends DareError {
  constructor(index: number, cipherSize: number) {
    super(index, `cipher file size ${cipherSize} is not a valid DARE stream length`, 'sio: invalid payload size', 'the file is truncated, corrupted, or not a DARE file');
  }
}

/** Random access only: a valid 1.0 stream with short middle packages (FORMAT.md §3). */
export class IrregularStreamError extends DareError {
  constructor(index: number) {
    super(index, 'irregular package length', 'sio: invalid payload size', 'this DARE 1.0 stream has short middle packages; decrypt it with `darefs decrypt` and re-encrypt it');
  }
}

/** The file is shorter than the 32-byte prefix. */
export class ShortPrefixError extends DareError {
  constructor(size: number) {
    super(0, `file of ${size} bytes`, 'short prefix', 'not a DARE file (too short to hold the 32-byte prefix)');
  }
}
