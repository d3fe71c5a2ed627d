// Text as the Python side treats it: protocol/sanitize.py's cleaning, to the code point;
// tui.py's name colours; and the bits of Python's str (strip, split, casefold, repr) that the
// other rules are written in terms of. Pure functions: no page, no network.
// As many as the terminal client's NAME_COLOURS (tui.py), so a name has the same colour.
const NAME_COLOURS = 8;

// -- text from the network: protocol/sanitize.py's rules, to the code point --

// Fields of a frame, as the type they must have: the server is trusted to send them right,
// but a wrong one must not show "undefined" or break the page.
const str = (value) => (typeof value === "string" ? value : "");
const num = (value) => (typeof value === "number" && Number.isFinite(value) ? value : 0);

// Removed: C0 and C1 controls but LF, surrogates, noncharacters and format characters but
// ZWNJ and ZWJ. Tab, CR, VT and FF fall in these ranges but are mapped before removal.
const REMOVED = [
  [0x0000, 0x0009], [0x000b, 0x001f], [0x007f, 0x009f], [0xd800, 0xdfff], [0xfdd0, 0xfdef],
  [0x00ad, 0x00ad], [0x0600, 0x0605], [0x061c, 0x061c], [0x06dd, 0x06dd], [0x070f, 0x070f],
  [0x0890, 0x0891], [0x08e2, 0x08e2], [0x180e, 0x180e], [0x200b, 0x200b], [0x200e, 0x200f],
  [0x202a, 0x202e], [0x2060, 0x206f], [0xfeff, 0xfeff], [0xfff0, 0xfffb], [0x110bd, 0x110bd],
  [0x110cd, 0x110cd], [0x13430, 0x1343f], [0x1bca0, 0x1bca3], [0x1d173, 0x1d17a],
  [0xe0000, 0xe00ff], [0xe01f0, 0xe0fff],
];
for (let plane = 0; plane <= 16; plane++) {
  REMOVED.push([plane * 0x10000 + 0xfffe, plane * 0x10000 + 0xffff]);
}
const hex = (cp) => `\\u{${cp.toString(16)}}`;
// With the "u" flag a lone surrogate is one code point that the class matches; a pair is not.
const ranges = REMOVED.map(([lo, hi]) => `${hex(lo)}-${hex(hi)}`).join("");
const UNSAFE = new RegExp(`[${ranges}]`, "gu");
const TO_NEWLINE = /\r\n|[\r\v\f\x85\u2028\u2029]/g;

function cleanText(text) {
  return String(text).replace(TO_NEWLINE, "\n").replace(/\t/g, " ").replace(UNSAFE, "");
}

function cleanLine(text) {
  return cleanText(text).replace(/\n/g, " ");
}

// -- name colours: tui.py's name_attr, zlib.crc32 of the case-folded UTF-8 name --

const CRC_TABLE = new Uint32Array(256).map((_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c;
});

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// Python's str.casefold. JavaScript has none; upper- then lower-casing each code point on its
// own (so no final-sigma context) gives the same result for every code point but three
// cases, put right here: dotless i stays, capital sharp s folds to "ss", and Cherokee folds
// to its capitals.
function casefold(text) {
  let out = "";
  for (const ch of text) {
    if (ch === "\u0131") {
      out += ch;
      continue;
    }
    for (const c of ch.toUpperCase().toLowerCase()) {
      const cp = c.codePointAt(0);
      if (c === "\u00df") out += "ss";
      else if (cp >= 0xab70 && cp <= 0xabbf) out += String.fromCodePoint(cp - 0xab70 + 0x13a0);
      else if (cp >= 0x13f8 && cp <= 0x13fd) out += String.fromCodePoint(cp - 8);
      else out += c;
    }
  }
  return out;
}

function nameColour(name) {
  return crc32(new TextEncoder().encode(casefold(name))) % NAME_COLOURS;
}

// Python's str.strip() and str.split(): its whitespace is not quite JavaScript's.
const PY_SPACE = "\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029" +
  "\\u202f\\u205f\\u3000";
const PY_STRIP = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, "g");
const PY_SPLIT = new RegExp(`[${PY_SPACE}]+`);
const strip = (text) => text.replace(PY_STRIP, "");
const splitWords = (text) => strip(text).split(PY_SPLIT).filter(Boolean);

// Python's repr() of a string, which the grammar's messages quote names and durations with.
const UNPRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]/u;
const ESCAPES = { "\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r" };

function pyRepr(text) {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of text) {
    const cp = ch.codePointAt(0);
    if (ch === quote) out += `\\${ch}`;
    else if (ESCAPES[ch]) out += ESCAPES[ch];
    else if (ch === " " || !UNPRINTABLE.test(ch)) out += ch;
    else if (cp < 0x100) out += `\\x${cp.toString(16).padStart(2, "0")}`;
    else if (cp < 0x10000) out += `\\u${cp.toString(16).padStart(4, "0")}`;
    else out += `\\U${cp.toString(16).padStart(8, "0")}`;
  }
  return out + quote;
}

export { casefold, cleanLine, cleanText, nameColour, num, pyRepr, splitWords, str, strip };
