// How the page shows the room: its rows, its panels, and the login form. Everything from the
// network reaches the page through here as text (textContent), never as markup, cleaned first
// (text.js). A function that shows the room reads the session it is given (session.js keeps it)
// and never changes it.

import { HELP, OPERATOR_HELP } from "./commands.js";
import { mentions } from "./names.js";
import { cleanLine, cleanText, nameColour, num, str } from "./text.js";

// The log keeps this many rows; older ones go, so a day-long session stays small.
const MAX_ROWS = 5000;

const KEYS_HELP = [
  ["Enter", "send"],
  ["Shift+Enter", "a new line in the message"],
  ["Tab", "complete a name (again: the next one), or a /command"],
];

export const $ = (id) => document.getElementById(id);
export const log = $("messages");

function node(tag, className, content) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (content !== undefined) el.textContent = content;
  return el;
}

const pad = (n) => String(n).padStart(2, "0");
export const plural = (n, word) => `${n.toLocaleString("en")} ${word}${n === 1 ? "" : "s"}`;
export const sentence = (text) => text.charAt(0).toUpperCase() + text.slice(1);

function setTime(time, ts) {
  const when = Number.isFinite(ts) ? new Date(ts * 1000) : new Date();
  time.dateTime = when.toISOString();
  time.textContent = `${pad(when.getHours())}:${pad(when.getMinutes())}`;
}

export function nameNode(session, name) {
  if (name === session.name) return node("span", "who me", cleanLine(name));
  return node("span", `who name${nameColour(name)}`, cleanLine(name));
}

// One row of the log: the time, then what happened. A reader scrolled up to read earlier
// rows stays where they are; one at the bottom (or who just sent) follows the new row.
export function addRow(kind, ts, parts, follow = false) {
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  const row = node("li", `entry ${kind}`);
  const time = node("time", "ts");
  setTime(time, ts);
  const body = node("div", "body");
  body.append(...parts);
  row.append(time, body);
  log.append(row);
  while (log.childElementCount > MAX_ROWS) log.firstElementChild.remove();
  if (atBottom || follow) log.scrollTop = log.scrollHeight;
  return row;
}

export function system(words, kind = "system") {
  return addRow(kind, undefined, [cleanText(words)]);
}

// Something the reader must not miss (the room closing, being removed): said at once.
export function alertRow(words, kind) {
  const row = system(words, kind);
  row.setAttribute("role", "alert");
  return row;
}

// "alice: hi", or "* alice waves" for an action (/me); a private message says so, so that
// nobody answers it in public by mistake.
function messageParts(session, frame, mark) {
  const from = nameNode(session, str(frame.from));
  const said = node("span", "text", cleanText(str(frame.text)));
  const parts = frame.action === true ? ["* ", from, " ", said, mark] : [from, ": ", said, mark];
  const to = cleanLine(str(frame.to));
  if (to) parts.unshift(node("span", "private", `(private to ${to}) `));
  return parts;
}

// A line by someone else that names me (or is private to me) stands out, and is announced
// unless it is history from before I joined.
export function showMessage(session, frame) {
  const from = str(frame.from);
  const text = str(frame.text);
  const mine = from === session.name;
  const mentioned = !mine && (str(frame.to) === session.name || mentions(text, session.name));
  const kind = mine ? "message mine" : mentioned ? "message mention" : "message";
  addRow(kind, frame.ts, messageParts(session, frame, ""));
  if (mentioned && session.holding !== "join") {
    const how = str(frame.to) ? "sent you a private message" : "mentioned you";
    announce(`${cleanLine(from)} ${how}: ${cleanLine(text)}`);
  }
}

function announce(words) {
  const region = $("mention-alert");
  region.textContent = "";
  region.textContent = words;
}

// Own lines: shown at once as pending, confirmed (with the room's time) by their echo.
export function showPending(session, line) {
  const mark = node("span", "mark", " …");
  mark.title = "sending";
  line.row = addRow("message mine pending", undefined, messageParts(session,
    { from: session.name, text: line.text, to: line.to, action: line.action }, mark), true);
}

export function showConfirmed(line, frame) {
  if (!line.row) return;
  line.row.className = "entry message mine sent";
  setTime(line.row.querySelector("time"), frame.ts);
  line.row.querySelector(".text").textContent = cleanText(str(frame.text));
  const mark = line.row.querySelector(".mark");
  mark.textContent = " ✓";
  mark.title = "delivered";
}

export function showFailed(line, why) {
  if (!line.row) return;
  line.row.className = "entry message mine failed";
  const mark = line.row.querySelector(".mark");
  mark.textContent = ` (not sent: ${cleanLine(why)})`;
  mark.title = "not sent";
}

// `alice (op), bob (away: lunch), carol`, as protocol/textmode.py's describe_members.
function marks(session, name) {
  const said = [];
  if (session.ops.includes(name)) said.push("op");
  if (session.away.has(name)) {
    const why = session.away.get(name);
    said.push(why ? `away: ${cleanLine(why)}` : "away");
  }
  return said;
}

export function describeMembers(session) {
  return session.members.map((name) => {
    const said = marks(session, name);
    return said.length ? `${cleanLine(name)} (${said.join(", ")})` : cleanLine(name);
  }).join(", ");
}

export function showMembers(session) {
  const list = $("members");
  list.replaceChildren(...session.members.map((name) => {
    const item = node("li");
    item.append(nameNode(session, name));
    const said = marks(session, name);
    if (name === session.name) said.unshift("you");
    if (said.length) item.append(node("span", "you", ` (${said.join(", ")})`));
    return item;
  }));
  $("count").textContent = String(session.members.length);
}

export function showTopic(session) {
  const topic = $("topic");
  const text = cleanLine(session.topic);
  topic.hidden = !text;
  topic.textContent = text ? `Topic: ${text}` : "";
  topic.title = text;
}

// /help, without a round trip: the commands (an operator's too) and the keys, one table.
export function showHelp() {
  const table = node("table", "help-list");
  const sections = [["Commands", HELP], ["Operators also", OPERATOR_HELP], ["Keys", KEYS_HELP]];
  for (const [title, rows] of sections) {
    const section = node("tbody");
    const head = node("th", "", title);
    head.colSpan = 2;
    head.scope = "colgroup";
    section.append(node("tr"));
    section.firstChild.append(head);
    for (const [usage, meaning] of rows) {
      const row = node("tr");
      const term = node("td");
      term.append(node("code", "", usage));
      row.append(term, node("td", "", meaning));
      section.append(row);
    }
    table.append(section);
  }
  addRow("help", undefined, [table], true);
}

// The answer to /bans: a table, one ban a row.
export function showBans(frame) {
  const bans = Array.isArray(frame.bans) ? frame.bans.filter((b) => b && typeof b === "object")
    : [];
  if (!bans.length) {
    addRow("bans", undefined, ["No bans."]);
    return;
  }
  const table = node("table", "ban-list");
  table.append(node("caption", "", `Bans (${bans.length})`));
  const head = node("tr");
  for (const title of ["Address", "Name", "Until", "By", "Reason"]) {
    const cell = node("th", "", title);
    cell.scope = "col";
    head.append(cell);
  }
  table.append(head);
  for (const ban of bans) {
    const row = node("tr");
    const until = typeof ban.until === "number" ? new Date(ban.until * 1000) : null;
    const when = until
      ? `${until.getFullYear()}-${pad(until.getMonth() + 1)}-${pad(until.getDate())} ` +
        `${pad(until.getHours())}:${pad(until.getMinutes())}`
      : "until lifted";
    for (const cell of [ban.address, ban.name, when, ban.by, ban.reason]) {
      row.append(node("td", "", cleanLine(str(cell))));
    }
    table.append(row);
  }
  addRow("bans", undefined, [table], true);
}

// The answer to /rooms: one line a room, the one we are in marked.
export function showRooms(session, frame) {
  const rooms = Array.isArray(frame.rooms) ? frame.rooms.filter((r) => r && typeof r === "object")
    : [];
  system(`Rooms (${rooms.length}):`);
  for (const room of rooms) {
    const name = str(room.name);
    const here = name === session.room ? " (you are here)" : "";
    const topic = cleanLine(str(room.topic));
    system(`  ${cleanLine(name)}${here}, ${num(room.members)} online${topic ? `: ${topic}` : ""}`);
  }
}

// The state line: connected, reconnecting (try `session.counted` of `tries`), or why the
// session ended; with how many typed lines wait, while they cannot go.
export function showState(session, waiting, tries) {
  const state = $("state");
  let shown = "connected";
  let kind = "";
  if (session.ending) {
    shown = { shutdown: "room closed", quit: "you left", kicked: "removed from the room" }[
      session.ending] || "disconnected";
    kind = "bad";
  } else if (!session.welcomed) {
    shown = `reconnecting ${session.counted}/${tries}`;
    kind = "warn";
  }
  if (waiting && !session.welcomed && !session.ending) shown = `${waiting} waiting · ${shown}`;
  state.textContent = shown;
  state.className = kind;
}

// -- the login form, with a password or a personal invite --


export function showLoginForm(invite, linkedRoom) {
  if (linkedRoom) $("login-title").textContent = `Join ${cleanLine(linkedRoom)}`;
  $("password-field").hidden = Boolean(invite);
  $("password").required = !invite;
  $("invite-note").hidden = !invite;
}

export function showLoginError(words, field) {
  const error = $("login-error");
  error.textContent = words;
  error.hidden = false;
  for (const input of [$("password"), $("name")]) {
    input.setAttribute("aria-invalid", String(input === field));
  }
  setLoginBusy(false);
  field.focus();
  if (field.select) field.select(); // to type over
}

export function setLoginBusy(busy) {
  for (const input of $("login-form").elements) input.disabled = busy;
  $("join").textContent = busy ? "Joining…" : "Join";
}

export function showRoom(session) {
  $("login").hidden = true;
  $("chat").hidden = false;
  $("room-name").textContent = cleanLine(session.room) || "multichat";
  document.title = `${cleanLine(session.room) || "multichat"} · multichat`;
  $("say").focus();
}
