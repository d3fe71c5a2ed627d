// The session: one member in one room, across connections, over multichat/1 on a WebSocket.
//
// The connection behaves as the terminal client's (client/connection.py), with the same
// numbers: typed lines carry an id and stay queued until their echo comes back (outbox.js,
// as client/outbox.py); a lost connection is rebuilt with back-off (reconnect.js, as
// client/reconnect.py). A rejoin resumes: its hello says the newest message seen (`since`),
// and the room replays each message after it once. A line the old connection delivered but
// whose echo was lost shows up in that replay under our name, and is not sent twice; the
// others go again once the replay is over.
//
// What comes from the network is shown through view.js, as text, cleaned as the terminal
// client cleans it (text.js). The page (app.js) starts a session with `join` and hands it
// what the member does: `say`, `request` and `quit`.

import { receiveFrame } from "./frames.js";
import { Outbox } from "./outbox.js";
import { afterRefusal, KICKS, RECONNECT_TRIES, retryDelay } from "./reconnect.js";
import { cleanLine, num, str } from "./text.js";
import {
  $, alertRow, sentence, showFailed, showLoginError, showLoginForm, showMembers, showPending,
  showRoom, showState, showTopic, system,
} from "./view.js";

// Below the server's 90 s idle ping, so a dead link (a phone that changed networks) is found
// on our side first; sooner while lines wait for their echo.
const IDLE_PING_MS = 60000;
const ACK_PING_MS = 10000;
const PONG_MS = 20000;
// On leaving, lines still waiting for their echo get this long, and the server's close too.
const QUIT_MS = 5000;
// The server's limit (sanitize.py): a longer line stays in the box to be shortened.
const MAX_TEXT_CHARS = 4000;

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

// What the page's link says: `invite` is spent (null) once the room refuses it.
export const link = { invite: readFragment("invite"), room: readFragment("room") };

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

// What a frame from the room may do to the connection (frames.js).
const connection = { send, flush, end, moved, updateState, current: () => session };

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
  else if (link.room) frame.room = link.room;
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
    receiveFrame(session, frame, connection);
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
    const verdict = afterRefusal(loginError.code, Date.now() - session.lostAt);
    if (verdict === "kicked") return end("kicked", reason);
    if (loginError.code === "bad_invite") {
      link.invite = null; // spent: the form asks for the password next time
      return end("lost", `Could not rejoin: ${reason}. Join again with the room password.`);
    }
    if (verdict === "give_up") return end("lost", `Could not rejoin: ${reason}`);
    if (verdict === "retry_uncounted") session.counted -= 1; // the name is still held
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
  session.timers.reconnect = setTimeout(open, retryDelay(session.tried));
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
    link.invite = null; // the password instead
    showLoginForm(link.invite, link.room);
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

export function quit() {
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

export function say(text, to = null, action = false) {
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
export function request(frame) {
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

// A member closing the tab leaves on purpose; say so rather than be seen as disconnected.
export function pageClosing() {
  if (session && session.welcomed && !session.ending) send({ type: "quit", reason: "quit" });
}

// The login form's answer: a new session, with the password or the link's invite.
export function join(name, password) {
  session = newSession(name, link.invite ? "" : password, link.invite);
  open();
}

// The session under way (null before the first join), for the page to read.
export const current = () => session;
