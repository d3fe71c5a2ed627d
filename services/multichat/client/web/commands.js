// What a member types: protocol/commands.py's grammar, to the message. Each command becomes
// the frame wire.py would encode for it, or a CommandError with the terminal's usage line.
import { pyRepr, splitWords, strip } from "./text.js";

// protocol/commands.py's HELP and OPERATOR_HELP, word for word (a test holds them together).
const HELP = [
  ["/msg NAME TEXT", "a private message to NAME"],
  ["/me TEXT", "an action: * you TEXT"],
  ["/nick NAME", "change your name"],
  ["/away [TEXT]", "say you are away (and why); /back when you return"],
  ["/who", "who is online, who is away, who are operators"],
  ["/rooms", "the rooms here: how many are in each, and its topic"],
  ["/join ROOM", "move to another room"],
  ["/help", "this list"],
  ["/quit or tata", "leave the room"],
  ["//TEXT", "a message that starts with '/'"],
];
const OPERATOR_HELP = [
  ["/topic TEXT", "set the room's topic"],
  ["/kick NAME [REASON]", "remove NAME from the room"],
  ["/ban NAME|ADDRESS [--for DURATION] [REASON]", "remove and keep out (30s, 10m, 2h, 1d)"],
  ["/unban NAME|ADDRESS", "lift a ban"],
  ["/mute NAME [--for DURATION]", "NAME may read but not say"],
  ["/unmute NAME", "lift a mute"],
  ["/lock, /unlock", "refuse or accept newcomers"],
  ["/op NAME, /deop NAME", "make NAME an operator, or not"],
  ["/bans", "list the bans"],
];
// Every slash command, for Tab: read off the help tables, as client/commands.py does.
const COMMAND_NAMES = [...new Set([...HELP, ...OPERATOR_HELP].flatMap(([usage, meaning]) =>
  Array.from(`${usage} ${meaning}`.matchAll(/(?<![/\w])\/([a-z]+)/g), (m) => m[1])))].sort();
// Commands whose first word is a member's name, where Tab completes one (quoted if it has a
// space, as `/msg "Ann B" hi` reads it).
const NAME_COMMANDS = new Set(["msg", "m", "tell", "kick", "ban", "unban", "mute", "unmute",
  "op", "deop"]);

// -- what a member types: protocol/commands.py's `parse`, to the message --

class CommandError extends Error {}

function partition(text, separator) {
  const at = text.indexOf(separator);
  return at < 0 ? [text, ""] : [text.slice(0, at), text.slice(at + separator.length)];
}

const UNITS = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };
// Python's \d is any decimal digit, as is float()'s idea of one.
const DURATION = /(\p{Nd}+(?:\.\p{Nd}+)?)([smhdw])/gu;
const DIGIT = /^\p{Nd}$/u;
// A year: longer is "until lifted", which is what leaving out --for says.
const MAX_DURATION = 366 * 86400;

// Decimal digits come in runs of ten, zero first: a digit's value is its place in its run.
function asciiDigits(text) {
  return Array.from(text, (ch) => {
    if (ch === ".") return ch;
    const cp = ch.codePointAt(0);
    let start = cp;
    while (DIGIT.test(String.fromCodePoint(start - 1))) start -= 1;
    return String((cp - start) % 10);
  }).join("");
}

function parseDuration(text) {
  const compact = strip(text).toLowerCase();
  const parts = Array.from(compact.matchAll(DURATION));
  if (!parts.length || parts.map((m) => m[0]).join("") !== compact) {
    throw new CommandError(`${pyRepr(text)} is not a duration; try 30s, 10m, 2h or 1d`);
  }
  const seconds = parts.reduce((sum, m) => sum + Number(asciiDigits(m[1])) * UNITS[m[2]], 0);
  if (!(seconds > 0 && seconds <= MAX_DURATION)) {
    throw new CommandError(`${pyRepr(text)}: a duration is more than 0 and at most a year`);
  }
  return seconds;
}

// `--for DURATION` (or `--for=DURATION`) anywhere in `words`, removed from them.
function takeDuration(words) {
  for (let i = 0; i < words.length; i++) {
    if (words[i] === "--for") {
      if (i + 1 >= words.length) throw new CommandError("--for needs a duration, such as 10m");
      const seconds = parseDuration(words[i + 1]);
      words.splice(i, 2);
      return seconds;
    }
    if (words[i].startsWith("--for=")) {
      const [word] = words.splice(i, 1);
      return parseDuration(word.slice("--for=".length));
    }
  }
  return null;
}

const MODERATION = new Set(["kick", "ban", "unban", "mute", "unmute", "op", "deop"]);
const BARE = new Set(["lock", "unlock", "bans"]);
const TARGET_KEY = { ban: "target", unban: "target" }; // the others name a member: "name"

// A moderation frame as docs/protocol.md gives it (wire.py's to_json of a Moderate).
function moderationFrame(command, target = "", reason = "", seconds = null) {
  const frame = { type: command };
  if (!BARE.has(command)) frame[TARGET_KEY[command] || "name"] = target;
  if (reason) frame.reason = reason;
  if (seconds !== null) frame.seconds = seconds;
  return frame;
}

// The first word of `rest` (or a "quoted name" with spaces) and what follows it.
function splitTarget(rest) {
  const text = strip(rest);
  if (text.startsWith('"')) {
    const end = text.indexOf('"', 1);
    if (end < 0) throw new CommandError('a quoted name needs its closing "');
    return [text.slice(1, end), strip(text.slice(end + 1))];
  }
  const [target, after] = partition(text, " ");
  return [target, strip(after)];
}

function moderation(command, given) {
  const words = [...given];
  const timed = command === "ban" || command === "mute";
  const seconds = timed ? takeDuration(words) : null;
  if (!words.length || !words[0]) {
    const what = command === "ban" || command === "unban" ? "NAME|ADDRESS" : "NAME";
    const extra = timed ? " [--for DURATION]" : "";
    const reason = command === "ban" || command === "kick" ? " [REASON]" : "";
    throw new CommandError(`usage: /${command} ${what}${extra}${reason}`);
  }
  const [target, ...more] = words;
  const reason = more.join(" ");
  if (reason && command !== "kick" && command !== "ban") {
    throw new CommandError(`/${command} takes a name and nothing more`);
  }
  return moderationFrame(command, target, reason, seconds);
}

// The frame one typed command asks for (`/` optional), as wire.py would encode the event
// protocol/commands.py's `parse` gives. Throws CommandError with the usage.
function parseCommand(line) {
  const text = strip(line).replace(/^\//, "");
  const [name, after] = partition(text, " ");
  const command = name.toLowerCase();
  const rest = strip(after);
  switch (command) {
    case "msg": case "m": case "tell": {
      const [target, message] = splitTarget(rest);
      if (!target || !strip(message)) {
        throw new CommandError('usage: /msg NAME TEXT (quote a name with spaces: "Ann B")');
      }
      return { type: "say", text: strip(message), to: target };
    }
    case "me":
      if (!rest) throw new CommandError("usage: /me TEXT");
      return { type: "say", text: rest, action: true };
    case "nick":
      if (!rest) throw new CommandError("usage: /nick NAME");
      return { type: "nick", name: rest.replace(/^"+|"+$/g, "") };
    case "away":
      return { type: "away", text: rest };
    case "back":
      return { type: "back" };
    case "topic":
      return { type: "topic", text: rest };
    case "who": case "names":
      return { type: "who" };
    case "rooms": case "list":
      return { type: "rooms" };
    case "join": case "j": {
      const room = strip(rest.replace(/^"+|"+$/g, ""));
      if (!room) throw new CommandError("usage: /join ROOM (/rooms lists them)");
      return { type: "join", room };
    }
    case "help": case "?":
      return { type: "help" };
    case "quit": case "exit":
      return { type: "quit", reason: "quit" };
    default:
      if (BARE.has(command)) return moderationFrame(command);
      if (MODERATION.has(command)) {
        const [target, words] = splitTarget(rest);
        return moderation(command, target ? [target, ...splitWords(words)] : []);
      }
  }
  throw new CommandError(`unknown command /${Array.from(name).slice(0, 20).join("")}; ` +
    "/help lists them");
}

export { COMMAND_NAMES, CommandError, HELP, NAME_COMMANDS, OPERATOR_HELP, parseCommand };
