// What each frame from the room does to the session, and to the page, once welcomed.
//
// The member list, the topic and who is away follow the room's frames; messages, joins and the
// rest are shown through view.js. After a rejoin, the room's replay is held until the answer
// to "who" ends it, then counted ("while you were away") and shown, our own lines among it
// taken as their echoes. `conn` is what a frame may do to the connection (session.js):
// `send`, `flush`, `end`, `moved`, `updateState`, and `current`, the session under way.

import { RETRY_UNAVAILABLE_MS } from "./outbox.js";
import { KICKS } from "./reconnect.js";
import { cleanLine, cleanText, num, str } from "./text.js";
import {
  addRow, alertRow, describeMembers, nameNode, plural, showBans, showConfirmed, showFailed,
  showMembers, showMessage, showRooms, showTopic, system,
} from "./view.js";

// Frames that are entries of the room's log: after a rejoin the room replays them, and they
// are held until the replay ends, to be counted and checked for our own lines first.
const LOG_FRAMES = new Set(["message", "join", "leave", "nick", "away", "back", "topic",
  "notice", "gap"]);
// Dated entries that a rejoin may replay although they came before the connection broke
// (the room resumes after a message, and these may follow it): older than what was seen,
// they are not news.
const DATED = new Set(["join", "leave", "nick", "notice"]);

function seen(session, frame) {
  session.lastTs = Math.max(session.lastTs, num(frame.ts));
}

export function receiveFrame(session, frame, conn) {
  if (session.holding === "rejoin" && LOG_FRAMES.has(frame.type)) {
    session.replay.push(frame);
    return;
  }
  switch (frame.type) {
    case "message": {
      session.lastSeq = Math.max(session.lastSeq, num(frame.seq));
      seen(session, frame);
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
      seen(session, frame);
      if (!session.holding && !session.members.includes(name)) session.members.push(name);
      addRow("join", frame.ts, ["→ ", nameNode(session, name), " joined"]);
      showMembers(session);
      break;
    }
    case "leave": {
      const name = str(frame.name);
      seen(session, frame);
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
        showReplay(session, conn);
      } else if (!session.holding) {
        system(`Online (${session.members.length}): ${describeMembers(session)}`);
      }
      session.holding = false;
      showMembers(session);
      break;
    case "nick": { // a member's new name; ours, too, when the room renamed us
      const [old, now] = [str(frame.old), str(frame.new)];
      seen(session, frame);
      if (old === session.name) session.name = now;
      if (!session.holding) session.members = session.members.map((n) => (n === old ? now : n));
      if (session.away.has(old)) session.away.set(now, session.away.get(old));
      session.away.delete(old);
      session.ops = session.ops.map((n) => (n === old ? now : n));
      addRow("system", frame.ts,
        [nameNode(session, old), " is now called ", nameNode(session, now)]);
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
      seen(session, frame);
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
      conn.moved(frame);
      break;
    case "ping":
      conn.send({ type: "pong", data: str(frame.data) });
      break;
    case "shutdown": {
      session.shutdown = str(frame.reason) || "the room closed";
      alertRow(`The room is closing: ${session.shutdown}`, "shutdown");
      break;
    }
    case "error":
      session.lastError = frame;
      refused(session, frame, conn);
      break;
    default: // "pong", "gap" outside a replay, and frame types newer than this page
  }
  conn.flush(); // a quit may have been waiting for the last echo
  conn.updateState();
}

// An error after the welcome: about one of our lines, the end of our session, or a request.
function refused(session, frame, conn) {
  const code = str(frame.code);
  const message = str(frame.message) || code;
  if (KICKS.has(code)) {
    conn.end("kicked", message); // the room closes on us next: coming back would not be welcome
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
    setTimeout(() => {
      if (session.outbox.retryDue(line) && conn.current() === session) conn.flush();
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
function showReplay(session, conn) {
  const frames = session.replay;
  const seenTs = session.lastTs;
  session.replay = [];
  session.holding = "replaying";
  let missed = 0;
  const fresh = frames.filter((frame) => {
    if (frame.type === "gap") missed += Math.max(0, num(frame.missed));
    else if (frame.type === "message") return !ownEcho(session, frame);
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
  for (const frame of fresh) receiveFrame(session, frame, conn);
}

function ownEcho(session, frame) {
  const line = session.outbox.claimReplayed(frame, session.name);
  if (!line) return false;
  session.lastSeq = Math.max(session.lastSeq, num(frame.seq));
  seen(session, frame);
  showConfirmed(line, frame);
  return true;
}
