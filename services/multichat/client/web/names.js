// Names in text: client/names.py's rules (a mention, Tab's completions), without its
// look-alike table.
import { COMMAND_NAMES, NAME_COMMANDS } from "./commands.js";
import { casefold, splitWords, strip } from "./text.js";

// -- names in text: client/names.py's rules, without its look-alike table --

// What people put around a name without it being part of it: "@bob", "bob:", "(bob)".
const EDGE_PUNCTUATION = "@,.:;!?()[]{}<>\"'`*_~";
const POSSESSIVES = ["'s", "\u2019s"];
// Tab after a name at the start of a line addresses that member, as IRC clients do.
const ADDRESS_SUFFIX = ": ";

// Case, width and compatibility forms folded, spaces dropped: "Ann B" is "annb".
const nameKey = (text) => casefold(text.normalize("NFKC")).normalize("NFKC").replace(/ /g, "");

function stripEdges(word) {
  let [start, end] = [0, word.length];
  while (start < end && EDGE_PUNCTUATION.includes(word[start])) start += 1;
  while (end > start && EDGE_PUNCTUATION.includes(word[end - 1])) end -= 1;
  return word.slice(start, end);
}

function bare(word) {
  const stripped = stripEdges(word);
  const ending = POSSESSIVES.find((p) => stripped.toLowerCase().endsWith(p));
  return ending ? stripped.slice(0, -ending.length) : stripped;
}

// Whether `text` names `name` as a whole word or run of words (names may have spaces).
function mentions(text, name) {
  const targets = new Set([nameKey(name), nameKey(stripEdges(name))].filter(Boolean));
  if (!targets.size) return false;
  const words = splitWords(text);
  if (words.some((word) => targets.has(nameKey(word)))) return true;
  const keys = words.map((word) => nameKey(bare(word)));
  for (let start = 0; start < keys.length; start++) {
    let joined = "";
    for (const key of keys.slice(start)) {
      joined += key;
      if (targets.has(joined)) return true;
      if (!joined || ![...targets].some((t) => t.startsWith(joined))) break;
    }
  }
  return false;
}

// What Tab may put in place of `before.slice(start)`: a /command at the start of the line,
// else another member's name, the longest typed run of words that starts one.
function complete(before, names, me) {
  if (before.startsWith("/") && !before.includes(" ")) {
    const typed = before.slice(1).toLowerCase();
    const options = COMMAND_NAMES.filter((c) => c.startsWith(typed)).map((c) => `/${c} `);
    return options.length ? { start: 0, options } : null;
  }
  const folded = (n) => casefold(n);
  const others = names.filter((n) => n !== me)
    .sort((a, b) => (folded(a) < folded(b) ? -1 : folded(a) > folded(b) ? 1 : 0));
  for (let start = 0; start < before.length; start++) {
    if (start > 0 && before[start - 1] !== " ") continue;
    const typed = before.slice(start);
    const at = typed.startsWith("@") ? "@" : "";
    const prefix = casefold(typed.slice(at.length));
    if (!prefix) continue;
    const matches = others.filter((n) => casefold(n).startsWith(prefix));
    if (!matches.length) continue;
    const command = strip(before.slice(0, start)).toLowerCase().replace(/^\//, "");
    let options;
    if (before.startsWith("/") && NAME_COMMANDS.has(command)) {
      options = matches.map((n) => (n.includes(" ") ? `"${n}" ` : `${n} `));
    } else if (start === 0) {
      options = matches.map((n) => `${at}${n}${ADDRESS_SUFFIX}`);
    } else {
      options = matches.map((n) => `${at}${n} `);
    }
    return { start, options };
  }
  return null;
}

export { complete, mentions, nameKey };
