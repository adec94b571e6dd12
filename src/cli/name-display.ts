// Names printed for a person: a name in a volume is any bytes but '/' and NUL, so one printed as
// it is can move the cursor, clear the screen, reorder the line (bidirectional controls) or fake a
// second line or column. Printed names go through visibleName.

/** Characters that change how the text around them is shown (bidi embeddings, isolates, marks; line and paragraph separators). */
const INVISIBLE_FORMAT = /^[\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]$/u;

const SHORT_ESCAPES: Record<string, string> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r' };

/**
 * A name (or path) with every character a terminal would not show as itself escaped, C-style:
 * `\\` for a backslash, `\t` `\n` `\r`, `\xHH` for other C0 controls, DEL, and each byte that is
 * not UTF-8 (name-text.ts carries such a byte as U+DC80..U+DCFF), `\uHHHH` for C1 controls,
 * the formatting characters above and any other lone surrogate. Unambiguous: every backslash in
 * the output starts an escape.
 */
export function visibleName(text: string): string {
  let out = '';
  for (const ch of text) {
    const c = ch.codePointAt(0)!;
    const short = SHORT_ESCAPES[ch];
    if (short !== undefined) out += short;
    else if (c < 0x20 || c === 0x7f) out += `\\x${hex(c, 2)}`;
    else if (c >= 0xdc80 && c <= 0xdcff) out += `\\x${hex(c & 0xff, 2)}`;
    else if ((c >= 0x80 && c < 0xa0) || (c >= 0xd800 && c <= 0xdfff) || INVISIBLE_FORMAT.test(ch)) out += `\\u${hex(c, 4)}`;
    else out += ch;
  }
  return out;
}

function hex(n: number, width: number): string {
  return n.toString(16).padStart(width, '0');
}
