// multichat in a browser: a login form, then the room, over multichat/1 on a WebSocket.
//
// The room serves this page itself, under a Content-Security-Policy that allows the page's own
// files (this module and the ones it imports) as the only scripts and style.css as the only
// style: no inline script or style, no eval, and no request anywhere but the room.
// Everything that comes from the network reaches the page as text (textContent), never as
// markup, and is cleaned first as the terminal client cleans it (protocol/sanitize.py): the
// server cleans too, but a client need not trust it.
//
// The connection behaves as the terminal client's (client/connection.py), with the same
// numbers: typed lines carry an id and stay queued until their echo comes back (outbox.js,
// as client/outbox.py); a lost connection is rebuilt with back-off (as client/reconnect.py,
// whose constants and refusal codes these are). A rejoin resumes: its
// hello says the newest message seen (`since`), and the room replays each message after it
// once. A line the old connection delivered but whose echo was lost shows up in that replay
// under our name, and is not sent twice; the others go again once the replay is over.
//
// What a member types follows protocol/commands.py (commands.js), the one grammar of the
// terminal client and of plain-text mode, with its usage messages word for word; a test holds
// the two together. Text is cleaned as protocol/sanitize.py cleans it (text.js), and names are
// found and completed as client/names.py does (names.js). How the page shows the room is
// view.js; this module keeps the session and its connection.

import { COMMAND_NAMES, CommandError, HELP, OPERATOR_HELP, parseCommand } from "./commands.js";
import { complete, mentions } from "./names.js";
import { Outbox, RETRY_UNAVAILABLE_MS } from "./outbox.js";
import { cleanLine, cleanText, nameColour, num, str } from "./text.js";
import {
  $, addRow, alertRow, describeMembers, log, nameNode, plural, sentence, setLoginBusy,
  showBans, showConfirmed, showFailed, showHelp, showLoginError, showLoginForm, showMembers,
  showMessage, showPending, showRoom, showRooms, showState, showTopic, system,
} from "./view.js";

// About 40 s of trying in all (0.5, 1, 2, 4, 8, 8, ... s): long enough for a room to restart.
const RECONNECT_TRIES = 8;
const RECONNECT_FIRST_MS = 500;
const RECONNECT_MAX_MS = 8000;
// Spread members' retries so a restarted room is not hit by all of them in the same instant.
const RECONNECT_JITTER = 0.2;
// The server keeps a connection that went silent up to 150 s before it lets the name go; a
// rejoin refused with "name_taken" keeps trying that long without using up tries.
const NAME_HELD_MS = 160000;
// Below the server's 90 s idle ping, so a dead link (a phone that changed networks) is found
// on our side first; sooner while lines wait for their echo.
const IDLE_PING_MS = 60000;
const ACK_PING_MS = 10000;
const PONG_MS = 20000;
// On leaving, lines still waiting for their echo get this long, and the server's close too.
const QUIT_MS = 5000;
// The server's limit (sanitize.py): a longer line stays in the box to be shortened.
const MAX_TEXT_CHARS = 4000;

// A room gone after a restart (the host no longer makes it) is one too.
const FATAL_LOGIN = new Set(["bad_password", "bad_name", "unsupported_version", "bad_invite",
  "no_such_room", "bad_room"]);
const KICKS = new Set(["flooding", "kicked", "banned"]); // coming back would not be welcome
const QUIT_WORDS = new Set(["tata", "/quit"]);
// Frames that are entries of the room's log: after a rejoin the room replays them, and they
// are held until the replay ends, to be counted and checked for our own lines first.
const LOG_FRAMES = new Set(["message", "join", "leave", "nick", "away", "back", "topic",
  "notice", "gap"]);
// Dated entries that a rejoin may replay although they came before the connection broke
// (the room resumes after a message, and these may follow it): older than what was seen,
// they are not news.
const DATED = new Set(["join", "leave", "nick", "notice"]);

// `https://HOST/#invite=TOKEN`, `#room=NAME`, or both (`#invite=TOKEN&room=NAME`): the
// fragment, which no server or tunnel ever sees. A link to a room joins it straight away.
function readFragment(key) {
  const found = new RegExp(`(?:^#|&)${key}=([^&]+)`).exec(location.hash);
  if (!found) return null;
  try {
    return decodeURIComponent(found[1]) || null;
  } catch {
    return null;
  }
}

let invite = readFragment("invite");
const linkedRoom = readFragment("room");

// -- the session: one member in one room, across connections --

let session = null;

function newSession(name, password, token) {
  return {
    name, password, invite: token, room: "", members: [], topic: "",
    joining: null, // a "join" typed: sent after the lines typed before it
    ops: [], away: new Map(), // as of the last member list, and away and back since
    ws: null, // the current socket; events from older ones are ignored
    welcomed: false, // this socket got its welcome
    everJoined: false,
    loginError: null, // the refusal this socket got before a welcome
    lastError: null, // the last error after the welcome
    lastNotice: null,
    dropReason: null,
    outbox: new Outbox(), // the lines typed, until their echo
    // "join" while the room shows its recent history, "rejoin" while it replays what was
    // missed (held in `replay`), until the answer to the "who" sent after the welcome.
    holding: false,
    replay: [],
    quitting: false, quitSent: false, shutdown: null, ending: null,
    lastSeq: 0, // the newest message seen: a rejoin resumes after it
    lastTs: 0, lastHeard: 0, pingedAt: 0,
    tried: 0, counted: 0, lostAt: 0,
    timers: { reconnect: 0, quit: 0, live: 0 },
  };
}

// The state line, with how many typed lines wait.
const updateState = () => showState(session, session.outbox.pending().length, RECONNECT_TRIES);

function wsUrl() {
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`;
}

function send(frame) {
  const ws = session.ws;
  // A socket that is closing drops what is sent; the line stays unacknowledged and goes
  // again after the rejoin.
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame));
}

function hello() {
  const frame = { type: "hello", version: 1, name: session.name, password: session.password };
  if (session.invite) Object.assign(frame, { password: "", invite: session.invite });
  // A rejoin goes back to the room we were in (a /join may have moved us from the first).
  if (session.everJoined) Object.assign(frame, { since: session.lastSeq, room: session.room });
  else if (linkedRoom) frame.room = linkedRoom;
  return frame;
}

function open() {
  const ws = new WebSocket(wsUrl());
  Object.assign(session, { ws, welcomed: false, loginError: null, lastError: null,
    dropReason: null, quitSent: false });
  ws.addEventListener("open", () => {
    if (ws === session.ws) send(hello());
  });
  ws.addEventListener("message", (event) => {
    if (ws === session.ws) receive(event.data);
  });
  ws.addEventListener("close", () => {
    if (ws === session.ws) closed();
  });
}

// Give up on the current socket now; a dead link may take long to report its close.
function drop(reason) {
  const ws = session.ws;
  session.dropReason = reason;
  closed();
  if (ws) ws.close();
}

function receive(data) {
  session.lastHeard = Date.now();
  session.pingedAt = 0;
  let frame;
  try {
    frame = JSON.parse(data);
  } catch {
    frame = null;
  }
  if (!frame || typeof frame !== "object" || typeof frame.type !== "string") {
    drop("the server sent something this page does not understand");
    return;
  }
  if (session.welcomed) {
    handle(frame);
  } else if (frame.type === "welcome") {
    welcomed(frame);
  } else if (frame.type === "error") {
    session.loginError = frame; // the server closes next
  }
}

function welcomed(frame) {
  const rejoined = session.everJoined;
  Object.assign(session, {
    welcomed: true, everJoined: true, tried: 0, counted: 0,
    name: String(frame.name ?? session.name), room: String(frame.room ?? ""),
    members: Array.isArray(frame.members) ? frame.members.map(String) : [],
    topic: str(frame.topic),
  });
  // The room's newest message: what the history shows is older. A room that numbers lower
  // than we saw started afresh (without its history); resuming goes on from its numbers.
  if (!rejoined || num(frame.seq) < session.lastSeq) session.lastSeq = num(frame.seq);
  session.timers.live = setInterval(checkAlive, 1000);
  // Everything before the answer to "who" is history the room shows (on joining) or replays
  // (on rejoining): its joins and leaves are shown but are not news for the member list,
  // which the welcome and the answer give. After a rejoin the replay is held, and the lines
  // typed meanwhile wait, until then.
  session.holding = rejoined ? "rejoin" : "join";
  session.replay = [];
  send({ type: "who" });
  if (!rejoined) {
    showRoom(session);
    system(`Welcome to ${session.room}, ${session.name}! Online: ${session.members.join(", ")}`);
    if (session.topic) system(`Topic: ${session.topic}`);
    system("Type a message and press Enter. /help lists commands.");
  }
  showTopic(session);
  showMembers(session);
  updateState();
}

// The room moved us (/join): the other room's welcome, then its recent history, whose joins
// and leaves are not news for the member list (the answer to "who" is).
function moved(frame) {
  Object.assign(session, {
    room: String(frame.room ?? ""), name: String(frame.name ?? session.name),
    members: Array.isArray(frame.members) ? frame.members.map(String) : [],
    topic: str(frame.topic), ops: [], away: new Map(),
    lastSeq: num(frame.seq), // the room's own numbers: a rejoin resumes after its newest
    holding: "join",
  });
  send({ type: "who" });
  showRoom(session);
  system(`Welcome to ${session.room}, ${session.name}! Online: ${session.members.join(", ")}`);
  if (session.topic) system(`Topic: ${session.topic}`);
  showTopic(session);
  showMembers(session);
}

// Send what is queued, unless the room is still replaying. A quit waits for every echo: once
// it is sent, the server reads nothing more from us.
function flush() {
  if (!session.welcomed || session.holding || session.quitSent) return;
  for (const line of session.outbox.take()) {
    const frame = { type: "say", text: line.text, id: line.id };
    if (line.to) frame.to = line.to;
    if (line.action) frame.action = true;
    send(frame);
  }
  if (session.joining) {
    send(session.joining);
    session.joining = null;
  }
  if (session.quitting && !session.outbox.awaitingEcho) {
    send({ type: "quit", reason: "quit" });
    session.quitSent = true;
  }
}

function seen(frame) {
  session.lastTs = Math.max(session.lastTs, num(frame.ts));
}

function handle(frame) {
  if (session.holding === "rejoin" && LOG_FRAMES.has(frame.type)) {
    session.replay.push(frame);
    return;
  }
  switch (frame.type) {
    case "message": {
      session.lastSeq = Math.max(session.lastSeq, num(frame.seq));
      seen(frame);
      const line = typeof frame.id === "string" && session.outbox.acknowledge(frame.id);
      if (line) {
        showConfirmed(line, frame);
      } else {
        showMessage(session, frame);
      }
      break;
    }
    case "join": {
      const name = str(frame.name);
      seen(frame);
      if (!session.holding && !session.members.includes(name)) session.members.push(name);
      addRow("join", frame.ts, ["→ ", nameNode(session, name), " joined"]);
      showMembers(session);
      break;
    }
    case "leave": {
      const name = str(frame.name);
      seen(frame);
      if (!session.holding) session.members = session.members.filter((n) => n !== name);
      session.away.delete(name);
      const why = cleanLine(str(frame.reason));
      addRow("leave", frame.ts, ["← ", nameNode(session, name), ` left (${why})`]);
      showMembers(session);
      break;
    }
    case "members":
      session.members = Array.isArray(frame.names) ? frame.names.map(String) : [];
      session.ops = Array.isArray(frame.ops) ? frame.ops.map(String) : [];
      session.away = new Map(Object.entries(frame.away && typeof frame.away === "object"
        ? frame.away : {}).map(([name, why]) => [name, str(why)]));
      if (session.holding === "rejoin") {
        system("Reconnected.");
        showReplay();
      } else if (!session.holding) {
        system(`Online (${session.members.length}): ${describeMembers(session)}`);
      }
      session.holding = false;
      showMembers(session);
      break;
    case "nick": { // a member's new name; ours, too, when the room renamed us
      const [old, now] = [str(frame.old), str(frame.new)];
      seen(frame);
      if (old === session.name) session.name = now;
      if (!session.holding) session.members = session.members.map((n) => (n === old ? now : n));
      if (session.away.has(old)) session.away.set(now, session.away.get(old));
      session.away.delete(old);
      session.ops = session.ops.map((n) => (n === old ? now : n));
      addRow("system", frame.ts, [nameNode(session, old), " is now called ", nameNode(session, now)]);
      showMembers(session);
      break;
    }
    case "away": {
      const name = str(frame.name);
      const why = cleanLine(str(frame.text));
      session.away.set(name, str(frame.text));
      addRow("leave", undefined, [nameNode(session, name), why ? ` is away: ${why}` : " is away"]);
      showMembers(session);
      break;
    }
    case "back":
      session.away.delete(str(frame.name));
      addRow("join", undefined, [nameNode(session, str(frame.name)), " is back"]);
      showMembers(session);
      break;
    case "topic": {
      session.topic = str(frame.text);
      const said = session.topic ? ` set the topic: ${cleanLine(session.topic)}`
        : " cleared the topic";
      addRow("system", undefined, [nameNode(session, str(frame.by)), said]);
      showTopic(session);
      break;
    }
    case "notice": {
      // An operator hears of its own action twice (the room's notice and the answer to its
      // command): the same notice, to the same instant, is shown once.
      const last = session.lastNotice;
      if (last && last.text === frame.text && last.ts === frame.ts) break;
      session.lastNotice = frame;
      seen(frame);
      addRow("notice", frame.ts, [cleanText(str(frame.text))]);
      break;
    }
    case "bans":
      showBans(frame);
      break;
    case "rooms":
      showRooms(session, frame);
      break;
    case "welcome":
      moved(frame);
      break;
    case "ping":
      send({ type: "pong", data: str(frame.data) });
      break;
    case "shutdown": {
      session.shutdown = str(frame.reason) || "the room closed";
      alertRow(`The room is closing: ${session.shutdown}`, "shutdown");
      break;
    }
    case "error":
      session.lastError = frame;
      refused(frame);
      break;
    default: // "pong", "gap" outside a replay, and frame types newer than this page
  }
  flush(); // a quit may have been waiting for the last echo
  updateState();
}

// An error after the welcome: about one of our lines, the end of our session, or a request.
function refused(frame) {
  const code = str(frame.code);
  const message = str(frame.message) || code;
  if (KICKS.has(code)) {
    end("kicked", message); // the room closes on us next: coming back would not be welcome
    return;
  }
  const refusal = session.outbox.refuse(code, message, frame.id);
  if (!refusal) {
    system(message, "error");
    return;
  }
  const [line, fate] = refusal;
  if (fate === "retried") {
    system(message, "error");
    const current = session;
    setTimeout(() => {
      if (current.outbox.retryDue(line) && current === session) flush();
    }, RETRY_UNAVAILABLE_MS);
  } else if (fate === "dropped") {
    showFailed(line, message);
  }
}

// The rejoin's replay is over: say how much was missed, then show it. A line of ours that
// the old connection delivered, but whose echo was lost, is in it under our name: that is
// its echo, and it is not sent again. Dated entries older than what was seen are not news;
// away, back and the topic are undated, history or news, there is no telling: they are
// followed quietly, as the terminal client does (the welcome brought the topic, and the
// member list just now says who is away).
function showReplay() {
  const frames = session.replay;
  const seenTs = session.lastTs;
  session.replay = [];
  session.holding = "replaying";
  let missed = 0;
  const fresh = frames.filter((frame) => {
    if (frame.type === "gap") missed += Math.max(0, num(frame.missed));
    else if (frame.type === "message") return !ownEcho(frame);
    else if (DATED.has(frame.type)) return num(frame.ts) > seenTs;
    else if (frame.type === "away") session.away.set(str(frame.name), str(frame.text));
    else if (frame.type === "back") session.away.delete(str(frame.name));
    else if (frame.type === "topic") session.topic = str(frame.text);
    else return true;
    return false;
  });
  showTopic(session);
  const count = fresh.filter((frame) => frame.type === "message").length + missed;
  if (count) {
    const skipped = missed ? ` (the oldest ${missed.toLocaleString("en")} are not shown)` : "";
    system(`While you were away: ${plural(count, "message")}${skipped}`, "resume");
  }
  for (const frame of fresh) handle(frame);
}

function ownEcho(frame) {
  const line = session.outbox.claimReplayed(frame, session.name);
  if (!line) return false;
  session.lastSeq = Math.max(session.lastSeq, num(frame.seq));
  seen(frame);
  showConfirmed(line, frame);
  return true;
}

function stopTimers() {
  clearInterval(session.timers.live);
  clearTimeout(session.timers.reconnect);
  clearTimeout(session.timers.quit);
}

// The current socket is gone (or given up): end the session, or try again.
function closed() {
  const { welcomed: wasWelcomed, loginError, lastError, dropReason } = session;
  session.ws = null;
  session.welcomed = false;
  session.holding = false;
  session.replay = [];
  session.joining = null; // a request is not kept for the next connection
  stopTimers();
  session.outbox.requeue();
  if (!session.everJoined) {
    loginFailed(loginError);
    return;
  }
  if (session.shutdown !== null) return end("shutdown", session.shutdown);
  if (session.quitting) return end("quit", "You left.");
  if (lastError && KICKS.has(lastError.code)) return end("kicked", str(lastError.message));
  let reason = dropReason || "the server closed the connection";
  if (!wasWelcomed && loginError) {
    reason = str(loginError.message) || str(loginError.code);
    if (loginError.code === "banned") return end("kicked", reason);
    if (loginError.code === "bad_invite") {
      invite = null; // spent: the form asks for the password next time
      return end("lost", `Could not rejoin: ${reason}. Join again with the room password.`);
    }
    if (FATAL_LOGIN.has(loginError.code)) return end("lost", `Could not rejoin: ${reason}`);
    if (loginError.code === "name_taken" && Date.now() - session.lostAt < NAME_HELD_MS) {
      session.counted -= 1; // our old connection still holds the name, for a while
    }
  } else if (!wasWelcomed) {
    reason = "could not reach the room";
  } else if (lastError && !dropReason) {
    reason = `the server closed the connection (${str(lastError.message)})`;
  }
  reconnect(reason, wasWelcomed);
}

function reconnect(reason, justLost) {
  if (justLost) {
    session.lostAt = Date.now();
    system(`Connection lost: ${reason}`, "error");
  }
  if (session.counted >= RECONNECT_TRIES) {
    end("lost", `Could not reconnect after ${RECONNECT_TRIES} tries: ${reason}`);
    return;
  }
  session.tried += 1;
  session.counted += 1;
  const jitter = 1 - RECONNECT_JITTER + Math.random() * 2 * RECONNECT_JITTER;
  const delay = Math.min(RECONNECT_MAX_MS, RECONNECT_FIRST_MS * 2 ** (session.tried - 1));
  session.timers.reconnect = setTimeout(open, delay * jitter);
  updateState();
}

// A phone that changed networks often leaves a socket that never reports its close.
function checkAlive() {
  const now = Date.now();
  const quiet = session.outbox.awaitingEcho ? ACK_PING_MS : IDLE_PING_MS;
  if (session.pingedAt && now - session.pingedAt > PONG_MS) {
    drop("no answer from the server");
  } else if (!session.pingedAt && now - session.lastHeard > quiet) {
    session.pingedAt = now;
    send({ type: "ping", data: "client" });
  }
}

function loginFailed(error) {
  const code = error ? error.code : "";
  const message = error ? str(error.message) || code : "Could not reach the room.";
  // The field to fix, or, when neither is wrong (a full room, say), the button to try again.
  let field = $("join");
  if (code === "name_taken" || code === "bad_name") field = $("name");
  else if (code === "bad_password" || code === "throttled") field = $("password");
  else if (code === "bad_invite") {
    invite = null; // the password instead
    showLoginForm(invite, linkedRoom);
    field = $("password");
  }
  if (field === $("password") && $("password-field").hidden) field = $("name");
  showLoginError(cleanLine(message), field);
}

function end(why, reason) {
  if (session.ending) return;
  stopTimers();
  if (session.ws) {
    const ws = session.ws;
    session.ws = null;
    ws.close();
  }
  session.welcomed = false;
  session.ending = why;
  session.outbox.requeue();
  for (const line of session.outbox.queued) showFailed(line, "the connection ended");
  session.members = []; // who is online is no longer known here
  showMembers(session);
  // A shutdown notice is on screen already.
  if (why === "quit") system(reason);
  else if (why === "lost") system(reason, "error");
  else if (why === "kicked") alertRow(sentence(cleanLine(reason)), "removed");
  $("say").disabled = true;
  $("send").disabled = true;
  $("leave").hidden = true;
  $("again").hidden = false;
  $("again").focus();
  updateState();
}

function quit() {
  if (session.ending) return;
  session.quitting = true;
  if (!session.welcomed) {
    end("quit", "You left.");
    return;
  }
  flush();
  // The server closes after our quit; if the echoes or the close do not come, stop waiting.
  session.timers.quit = setTimeout(() => drop("you left"), QUIT_MS);
}

// -- what the member does --

function say(text, to = null, action = false) {
  if ([...text].length > MAX_TEXT_CHARS) {
    system(`Too long to send (${[...text].length} characters; at most ${MAX_TEXT_CHARS}).`,
      "error");
    return false;
  }
  showPending(session, session.outbox.add(text, to, action));
  flush();
  updateState();
  return true;
}

// Anything but a line (/nick, /away, /kick, ...): sent now, and only while connected. The
// room answers with an error, a notice or nothing; asking again later is the member's call.
function request(frame) {
  if (!session.welcomed) {
    system("Not connected; try again once reconnected.", "error");
    return false;
  }
  if (frame.type === "join") {
    // Lines typed before it are said in the room they were typed in: it waits for them.
    session.joining = frame;
    flush();
    return true;
  }
  send(frame);
  return true;
}

// As client/commands.py reads a typed line. A command that does not parse stays in the box,
// to be put right, with its usage below.
function submit(typed) {
  const word = typed.trim();
  if (!word) return true;
  const lowered = word.toLowerCase();
  if (QUIT_WORDS.has(lowered)) {
    quit();
    return true;
  }
  if (word.startsWith("//")) return say(typed.trimStart().slice(1));
  if (!(word.startsWith("/") && word.length > 1 && !/\s/.test(word[1]))) return say(typed);
  let frame;
  try {
    frame = parseCommand(word);
  } catch (error) {
    if (!(error instanceof CommandError)) throw error;
    system(error.message, "error");
    return false;
  }
  switch (frame.type) {
    case "say":
      return say(frame.text, frame.to ?? null, frame.action === true);
    case "quit":
      quit();
      return true;
    case "help":
      showHelp();
      return true;
    default:
      return request(frame);
  }
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("name").value.trim();
  const password = $("password").value;
  if (!invite && !password) return showLoginError("Type the room password.", $("password"));
  if (!name) return showLoginError("Type a name.", $("name"));
  $("login-error").hidden = true;
  setLoginBusy(true);
  session = newSession(name, invite ? "" : password, invite);
  open();
});

// Tab: the name (or /command) being typed; Tab again: the next one. With nothing to
// complete, Tab moves on as it always does, so the keyboard never gets stuck in the box.
let completion = null; // { found, index, before }: the cycle under way

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const box = $("say");
  if (submit(box.value)) box.value = "";
  completion = null;
  box.focus();
});

function completeAtCursor(box) {
  const { value, selectionStart: cursor, selectionEnd } = box;
  if (cursor !== selectionEnd || !session) return false;
  let before;
  let after;
  if (completion && completion.before === value.slice(0, cursor)) {
    const { found } = completion;
    completion.index = (completion.index + 1) % found.options.length;
    before = value.slice(0, found.start) + found.options[completion.index];
    after = value.slice(cursor);
  } else {
    const found = complete(value.slice(0, cursor), session.members, session.name);
    if (!found) return false;
    completion = { found, index: 0 };
    before = value.slice(0, found.start) + found.options[0];
    after = value.slice(cursor);
  }
  box.value = before + after;
  box.setSelectionRange(before.length, before.length);
  completion.before = before;
  if (completion.found.options.length < 2) completion = null;
  return true;
}

// Enter sends, Shift+Enter starts a new line; Enter that ends an IME composition does not send.
$("say").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  } else if (event.key === "Tab" && !event.shiftKey && !event.altKey && !event.ctrlKey
      && !event.metaKey && !event.isComposing) {
    if (completeAtCursor(event.target)) event.preventDefault();
  } else if (event.key !== "Shift") {
    completion = null;
  }
});

$("leave").addEventListener("click", quit);

$("again").addEventListener("click", () => {
  log.replaceChildren();
  $("members").replaceChildren();
  $("say").disabled = false;
  $("send").disabled = false;
  $("leave").hidden = false;
  $("again").hidden = true;
  $("chat").hidden = true;
  $("login").hidden = false;
  $("topic").hidden = true;
  document.title = "multichat";
  showLoginForm(invite, linkedRoom);
  setLoginBusy(false);
  (invite ? $("name") : $("password")).focus();
});

// A member closing the tab leaves on purpose; say so rather than be seen as disconnected.
window.addEventListener("pagehide", () => {
  if (session && session.welcomed && !session.ending) send({ type: "quit", reason: "quit" });
});

showLoginForm(invite, linkedRoom);

// For the tests, and for anyone curious in the console: the rules shared with Python.
window.multichat = Object.freeze({
  Outbox,
  cleanText,
  nameColour,
  mentions,
  complete,
  HELP,
  OPERATOR_HELP,
  COMMAND_NAMES,
  parseCommand(line) {
    try {
      return { frame: parseCommand(line) };
    } catch (error) {
      if (error instanceof CommandError) return { error: error.message };
      throw error;
    }
  },
});
