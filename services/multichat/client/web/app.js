// multichat in a browser: a login form, then the room, over multichat/1 on a WebSocket.
//
// The room serves this page itself, under a Content-Security-Policy that allows this file as
// the only script and style.css as the only style: no inline script or style, no eval, and no
// request anywhere but the room. Everything that comes from the network reaches the page as
// text (textContent), never as markup, and is cleaned first as the terminal client cleans it
// (protocol/sanitize.py): the server cleans too, but a client need not trust it.
//
// The connection behaves as the terminal client's (client/connection.py), with the same
// numbers: typed lines carry an id and stay queued until their echo comes back; a lost
// connection is rebuilt with back-off, and lines the old one may have delivered are looked for
// in the history the room replays after the rejoin, so none is posted twice.
"use strict";

(() => {
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
  // The log keeps this many rows; older ones go, so a day-long session stays small.
  const MAX_ROWS = 5000;
  // As many as the terminal client's NAME_COLOURS (tui.py), so a name has the same colour.
  const NAME_COLOURS = 8;

  const LINE_REFUSALS = new Set(["too_long", "empty", "muted"]); // sending again cannot help
  const LINE_DEFERRALS = new Set(["shutting_down", "not_joined"]); // may go after a rejoin
  const FATAL_LOGIN = new Set(["bad_password", "bad_name", "unsupported_version", "banned"]);
  const KICKS = new Set(["flooding", "kicked", "banned"]); // coming back would not be welcome
  const QUIT_WORDS = new Set(["tata", "/quit"]);
  const HELP = [
    ["/who", "list who is online"],
    ["/help", "show this list"],
    ["/quit or tata", "leave the room"],
    ["//text", "send a message that starts with '/'"],
    ["Shift+Enter", "a new line in the message"],
  ];

  // -- text from the network: protocol/sanitize.py's rules, to the code point --

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

  // -- the page --

  const $ = (id) => document.getElementById(id);
  const log = $("messages");

  function node(tag, className, content) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    if (content !== undefined) el.textContent = content;
    return el;
  }

  const pad = (n) => String(n).padStart(2, "0");
  // Fields of a frame, as the type they must have: the server is trusted to send them right,
  // but a wrong one must not show "undefined" or break the page.
  const str = (value) => (typeof value === "string" ? value : "");
  const num = (value) => (typeof value === "number" ? value : 0);

  function setTime(time, ts) {
    const when = Number.isFinite(ts) ? new Date(ts * 1000) : new Date();
    time.dateTime = when.toISOString();
    time.textContent = `${pad(when.getHours())}:${pad(when.getMinutes())}`;
  }

  function nameNode(name) {
    if (name === session.name) return node("span", "who me", cleanLine(name));
    return node("span", `who name${nameColour(name)}`, cleanLine(name));
  }

  // One row of the log: the time, then what happened. A reader scrolled up to read earlier
  // rows stays where they are; one at the bottom (or who just sent) follows the new row.
  function addRow(kind, ts, parts, follow = false) {
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

  function system(words, kind = "system") {
    return addRow(kind, undefined, [cleanText(words)]);
  }

  // "alice: hi", or "* alice waves" for an action (/me); a private message says so, so that
  // nobody answers it in public by mistake.
  function messageParts(frame, mark) {
    const from = nameNode(str(frame.from));
    const said = node("span", "text", cleanText(str(frame.text)));
    const parts = frame.action === true ? ["* ", from, " ", said, mark] : [from, ": ", said, mark];
    const to = cleanLine(str(frame.to));
    if (to) parts.unshift(node("span", "private", `(private to ${to}) `));
    return parts;
  }

  function showMessage(frame) {
    const kind = str(frame.from) === session.name ? "message mine" : "message";
    addRow(kind, frame.ts, messageParts(frame, ""));
  }

  // Own lines: shown at once as pending, confirmed (with the room's time) by their echo.
  function showPending(line) {
    const mark = node("span", "mark", " …");
    mark.title = "sending";
    line.row = addRow("message mine pending", undefined,
      messageParts({ from: session.name, text: line.text }, mark), true);
  }

  function showConfirmed(line, frame) {
    if (!line.row) return;
    line.row.className = "entry message mine sent";
    setTime(line.row.querySelector("time"), frame.ts);
    line.row.querySelector(".text").textContent = cleanText(frame.text);
    const mark = line.row.querySelector(".mark");
    mark.textContent = " ✓";
    mark.title = "delivered";
  }

  function showFailed(line, why) {
    if (!line.row) return;
    line.row.className = "entry message mine failed";
    const mark = line.row.querySelector(".mark");
    mark.textContent = ` (not sent: ${cleanLine(why)})`;
    mark.title = "not sent";
  }

  function showMembers() {
    const list = $("members");
    list.replaceChildren(...session.members.map((name) => {
      const item = node("li");
      item.append(nameNode(name));
      if (name === session.name) item.append(node("span", "you", " (you)"));
      return item;
    }));
    $("count").textContent = String(session.members.length);
  }

  function showState() {
    const state = $("state");
    let shown = "connected";
    let kind = "";
    if (session.ending) {
      shown = { shutdown: "room closed", quit: "you left" }[session.ending] || "disconnected";
      kind = "bad";
    } else if (!session.welcomed) {
      shown = `reconnecting ${session.counted}/${RECONNECT_TRIES}`;
      kind = "warn";
    }
    const waiting = pending().length;
    if (waiting && !session.welcomed && !session.ending) shown = `${waiting} waiting · ${shown}`;
    state.textContent = shown;
    state.className = kind;
  }

  function showLoginError(words, field) {
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

  function setLoginBusy(busy) {
    for (const input of $("login-form").elements) input.disabled = busy;
    $("join").textContent = busy ? "Joining…" : "Join";
  }

  function showRoom() {
    $("login").hidden = true;
    $("chat").hidden = false;
    $("room-name").textContent = cleanLine(session.room) || "multichat";
    document.title = `${cleanLine(session.room) || "multichat"} · multichat`;
    $("say").focus();
  }

  // -- the session: one member in one room, across connections --

  let session = null;

  function newSession(name, password) {
    const prefix = Array.from(crypto.getRandomValues(new Uint8Array(3)),
      (b) => b.toString(16).padStart(2, "0")).join("");
    return {
      name, password, room: "", members: [],
      ws: null, // the current socket; events from older ones are ignored
      welcomed: false, // this socket got its welcome
      everJoined: false,
      loginError: null, // the refusal this socket got before a welcome
      lastError: null, // the last error after the welcome
      dropReason: null,
      outbox: [], // typed, not sent on this connection yet
      unacked: new Map(), // sent on this connection, echo not seen yet, by id
      deferred: [], // refused while the room was closing
      maybeDelivered: new Set(), // ids sent on a connection that broke
      holding: false, // "join" or "rejoin" while the room replays its history
      quitting: false, quitSent: false, shutdown: null, ending: null,
      lastSeq: 0, lastTs: 0, lastHeard: 0, pingedAt: 0,
      tried: 0, counted: 0, lostAt: 0,
      timers: { reconnect: 0, quit: 0, live: 0 },
      prefix, nextId: 0,
    };
  }

  const pending = () => [...session.deferred, ...session.unacked.values(), ...session.outbox];

  function wsUrl() {
    return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`;
  }

  function send(frame) {
    const ws = session.ws;
    // A socket that is closing drops what is sent; the line stays unacknowledged and goes
    // again after the rejoin.
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame));
  }

  function open() {
    const ws = new WebSocket(wsUrl());
    Object.assign(session, { ws, welcomed: false, loginError: null, lastError: null,
      dropReason: null, quitSent: false });
    ws.addEventListener("open", () => {
      if (ws !== session.ws) return;
      send({ type: "hello", version: 1, name: session.name, password: session.password });
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
    });
    session.timers.live = setInterval(checkAlive, 1000);
    // Everything before the answer to "who" is history the room replays: its joins and leaves
    // are shown but are not news for the member list, which the welcome and the answer give.
    // After a rejoin the lines typed meanwhile wait until then, to be matched with the history.
    session.holding = rejoined ? "rejoin" : "join";
    send({ type: "who" });
    if (!rejoined) {
      showRoom();
      system(`Welcome to ${session.room}, ${session.name}! Online: ${session.members.join(", ")}`);
      if (str(frame.topic)) system(`Topic: ${str(frame.topic)}`);
      system("Type a message and press Enter. /help lists commands.");
    }
    showMembers();
    showState();
  }

  // Send what is queued, unless the history after a rejoin is still being replayed. A quit
  // waits for every echo: once it is sent, the server reads nothing more from us.
  function flush() {
    if (!session.welcomed || session.holding || session.quitSent) return;
    while (session.outbox.length) {
      const line = session.outbox.shift();
      session.unacked.set(line.id, line);
      send({ type: "say", text: line.text, id: line.id });
    }
    if (session.quitting && session.unacked.size === 0) {
      send({ type: "quit", reason: "quit" });
      session.quitSent = true;
    }
  }

  function handle(frame) {
    if (session.holding && replayed(frame)) return;
    switch (frame.type) {
      case "message": {
        if (!str(frame.to)) session.lastSeq = num(frame.seq); // private ones count apart
        session.lastTs = Math.max(session.lastTs, num(frame.ts));
        const line = typeof frame.id === "string" ? session.unacked.get(frame.id) : undefined;
        if (line) {
          session.unacked.delete(line.id);
          session.maybeDelivered.delete(line.id);
          showConfirmed(line, frame);
        } else {
          showMessage(frame);
        }
        break;
      }
      case "join": {
        const name = str(frame.name);
        session.lastTs = Math.max(session.lastTs, num(frame.ts));
        if (!session.holding && !session.members.includes(name)) session.members.push(name);
        addRow("join", frame.ts, ["→ ", nameNode(name), " joined"]);
        showMembers();
        break;
      }
      case "leave": {
        const name = str(frame.name);
        session.lastTs = Math.max(session.lastTs, num(frame.ts));
        if (!session.holding) session.members = session.members.filter((n) => n !== name);
        const why = cleanLine(str(frame.reason));
        addRow("leave", frame.ts, ["← ", nameNode(name), ` left (${why})`]);
        showMembers();
        break;
      }
      case "members":
        session.members = Array.isArray(frame.names) ? frame.names.map(String) : [];
        showMembers();
        if (session.holding) {
          if (session.holding === "rejoin") system("Reconnected.");
          session.holding = false;
          flush();
        } else {
          system(`Online (${session.members.length}): ${session.members.join(", ")}`);
        }
        break;
      case "nick": { // a member's new name; ours, too, when the room renamed us
        const [old, now] = [str(frame.old), str(frame.new)];
        session.lastTs = Math.max(session.lastTs, num(frame.ts));
        if (old === session.name) session.name = now;
        if (!session.holding) session.members = session.members.map((n) => (n === old ? now : n));
        addRow("system", frame.ts, [nameNode(old), " is now called ", nameNode(now)]);
        showMembers();
        break;
      }
      case "away": {
        const why = cleanLine(str(frame.text));
        const parts = [nameNode(str(frame.name)), why ? ` is away: ${why}` : " is away"];
        addRow("leave", undefined, parts);
        break;
      }
      case "back":
        addRow("join", undefined, [nameNode(str(frame.name)), " is back"]);
        break;
      case "topic":
        addRow("system", undefined,
          [nameNode(str(frame.by)), ` set the topic: ${cleanLine(str(frame.text))}`]);
        break;
      case "notice":
        session.lastTs = Math.max(session.lastTs, num(frame.ts));
        addRow("system", frame.ts, [cleanText(str(frame.text))]);
        break;
      case "ping":
        send({ type: "pong", data: str(frame.data) });
        break;
      case "shutdown": {
        session.shutdown = str(frame.reason) || "the room closed";
        const notice = system(`The room is closing: ${session.shutdown}`, "shutdown");
        notice.setAttribute("role", "alert");
        break;
      }
      case "error":
        session.lastError = frame;
        if (session.unacked.size
            && (LINE_REFUSALS.has(frame.code) || LINE_DEFERRALS.has(frame.code))) {
          // Refusals come in the order the lines were sent: this one is about the oldest.
          const line = session.unacked.values().next().value;
          session.unacked.delete(line.id);
          if (LINE_REFUSALS.has(frame.code)) {
            session.maybeDelivered.delete(line.id);
            showFailed(line, str(frame.message));
          } else {
            session.deferred.push(line);
          }
        } else {
          system(str(frame.message) || str(frame.code), "error");
        }
        break;
      default: // "pong", and frame types newer than this page
    }
    flush(); // a quit may have been waiting for the last echo
    showState();
  }

  // While holding after a rejoin: whether `frame` is history already shown. A line of ours that
  // the old connection delivered, but whose echo was lost, shows up under our name: that is its
  // echo, and it is not sent again.
  function replayed(frame) {
    const ts = num(frame.ts);
    if (frame.type === "message" && frame.id === undefined) {
      if (num(frame.seq) <= session.lastSeq && ts <= session.lastTs) return true;
      if (frame.from !== session.name) return false;
      const at = session.outbox.findIndex(
        (line) => session.maybeDelivered.has(line.id) && cleanText(line.text) === frame.text);
      if (at < 0) return false;
      const [line] = session.outbox.splice(at, 1);
      session.unacked.set(line.id, line);
      handle({ ...frame, id: line.id });
      return true;
    }
    if (["join", "leave", "nick", "notice"].includes(frame.type)) return ts <= session.lastTs;
    return false;
  }

  // Lines not acknowledged go back to the front of the queue, in the order typed.
  function requeue() {
    const back = [...session.deferred, ...session.unacked.values()];
    for (const line of session.unacked.values()) session.maybeDelivered.add(line.id);
    session.outbox.unshift(...back);
    session.deferred = [];
    session.unacked.clear();
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
    stopTimers();
    requeue();
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
    showState();
  }

  // A phone that changed networks often leaves a socket that never reports its close.
  function checkAlive() {
    const now = Date.now();
    const quiet = session.unacked.size ? ACK_PING_MS : IDLE_PING_MS;
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
    showLoginError(cleanLine(message), field);
  }

  function end(why, reason) {
    stopTimers();
    if (session.ws) {
      const ws = session.ws;
      session.ws = null;
      ws.close();
    }
    session.ending = why;
    for (const line of session.outbox) showFailed(line, "the connection ended");
    session.members = []; // who is online is no longer known here
    showMembers();
    // A shutdown notice, or the error that closed us (kicked, flooding), is on screen already.
    if (why === "quit") system(reason);
    else if (why === "lost") system(reason, "error");
    $("say").disabled = true;
    $("send").disabled = true;
    $("leave").hidden = true;
    $("again").hidden = false;
    $("again").focus();
    showState();
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

  function say(line) {
    if ([...line].length > MAX_TEXT_CHARS) {
      system(`Too long to send (${[...line].length} characters; at most ${MAX_TEXT_CHARS}).`,
        "error");
      return false;
    }
    session.nextId += 1;
    const entry = { id: `${session.prefix}-${session.nextId}`, text: line, row: null };
    showPending(entry);
    session.outbox.push(entry);
    flush();
    showState();
    return true;
  }

  // The terminal client's commands (client/commands.py), so a member types the same things.
  function submit(typed) {
    const word = typed.trim();
    if (!word) return true;
    const lowered = word.toLowerCase();
    if (QUIT_WORDS.has(lowered)) {
      quit();
    } else if (lowered === "/who") {
      if (session.welcomed) send({ type: "who" });
      else system("Not connected; try /who again once reconnected.", "error");
    } else if (lowered === "/help" || lowered === "/?") {
      for (const [usage, meaning] of HELP) system(`${usage.padEnd(16)} ${meaning}`);
    } else if (word.startsWith("//")) {
      return say(typed.trimStart().slice(1));
    } else if (word.startsWith("/") && word.length > 1 && !/\s/.test(word[1])) {
      system(`Unknown command ${word.split(/\s/)[0]}; /help lists commands.`, "error");
    } else {
      return say(typed);
    }
    return true;
  }

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = $("name").value.trim();
    const password = $("password").value;
    if (!password) return showLoginError("Type the room password.", $("password"));
    if (!name) return showLoginError("Type a name.", $("name"));
    $("login-error").hidden = true;
    setLoginBusy(true);
    session = newSession(name, password);
    open();
  });

  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const box = $("say");
    if (submit(box.value)) box.value = "";
    box.focus();
  });

  // Enter sends, Shift+Enter starts a new line; Enter that ends an IME composition does not send.
  $("say").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
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
    document.title = "multichat";
    setLoginBusy(false);
    $("password").focus();
  });

  // A member closing the tab leaves on purpose; say so rather than be seen as disconnected.
  window.addEventListener("pagehide", () => {
    if (session && session.welcomed && !session.ending) send({ type: "quit", reason: "quit" });
  });

  // For the tests, and for anyone curious in the console: the two rules shared with Python.
  window.multichat = Object.freeze({ cleanText, nameColour });
})();
