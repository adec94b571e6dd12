import { isUtf8 } from 'node:buffer';

/**
 * Names are bytes to the kernel and strings to the path-based operations. This is the one
 * mapping between the two, lossless both ways (Python's "surrogateescape"): a valid UTF-8 name is
 * its ordinary string, and each byte of an invalid sequence becomes the lone surrogate
 * U+DC80..U+DCFF, which no valid UTF-8 decodes to. Plain names must be well-formed strings to be
 * used as file names by node:fs; encrypted names are sealed from the bytes.
 */

/** The string for a name's bytes. */
export function nameText(bytes: Buffer): string {
  if (isUtf8(bytes)) return bytes.toString('utf8');
  let out = '';
  let i = 0;
  while (i < bytes.length) {
    const n = validSequenceLength(bytes, i);
    if (n > 0) {
      out += bytes.toString('utf8', i, i + n);
      i += n;
    } else {
      out += String.fromCharCode(0xdc00 | bytes[i]);
      i++;
    }
  }
  return out;
}

/** The bytes of a name's string (nameText's inverse). */
export function nameBytes(text: string): Buffer {
  if (isPlainText(text)) return Buffer.from(text, 'utf8');
  const parts: Buffer[] = [];
  let run = '';
  // Iterates code points: a surrogate pair is one, a lone surrogate one of its own.
  for (const ch of text) {
    const c = ch.charCodeAt(0);
    if (ch.length === 2 || c < 0xd800 || c > 0xdfff) {
      run += ch;
      continue;
    }
    parts.push(Buffer.from(run, 'utf8'));
    run = '';
    // Only U+DC80..U+DCFF stand for bytes; any other lone surrogate came from elsewhere (a
    // program's own string): its UTF-8 replacement character, as node:fs would write it.
    parts.push(c >= 0xdc80 && c <= 0xdcff ? Buffer.of(c & 0xff) : Buffer.from('\ufffd', 'utf8'));
  }
  parts.push(Buffer.from(run, 'utf8'));
  return Buffer.concat(parts);
}

// In a unicode-mode class, a surrogate pair is one code point: only lone surrogates match.
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

/** Whether a name's string is its UTF-8 bytes as node:fs would write them (no escaped byte). */
export function isPlainText(text: string): boolean {
  return !LONE_SURROGATE.test(text);
}

/** Length of the valid UTF-8 sequence at `i`, or 0 (RFC 3629: no overlongs, surrogates, > U+10FFFF). */
function validSequenceLength(b: Buffer, i: number): number {
  const c = b[i];
  if (c < 0x80) return 1;
  const cont = (k: number, lo = 0x80, hi = 0xbf): boolean => i + k < b.length && b[i + k] >= lo && b[i + k] <= hi;
  if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
  if (c === 0xe0) return cont(1, 0xa0) && cont(2) ? 3 : 0;
  if ((c >= 0xe1 && c <= 0xec) || c === 0xee || c === 0xef) return cont(1) && cont(2) ? 3 : 0;
  if (c === 0xed) return cont(1, 0x80, 0x9f) && cont(2) ? 3 : 0;
  if (c === 0xf0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xf1 && c <= 0xf3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c === 0xf4) return cont(1, 0x80, 0x8f) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}
