// multichat in a browser: a login form, then the room, over multichat/1 on a WebSocket.
//
// The room serves this page itself, under a Content-Security-Policy that allows the page's own
// files (this module and the ones it imports) as the only scripts and style.css as the only
// style: no inline script or style, no eval, and no request anywhere but the room.
// Everything that comes from the network reaches the page as text (textContent), never as
// markup, and is cleaned first as the terminal client cleans it (protocol/sanitize.py): the
// server cleans too, but a client need not trust it.
//
// This module is the page's controls: the login form, the box a member types in, and its
// buttons. The session and its connection are session.js; how the page shows the room is
// view.js. What a member types follows protocol/commands.py (commands.js), the one grammar of
// the terminal client and of plain-text mode, with its usage messages word for word; a test
// holds the two together. Names are found and completed as client/names.py does (names.js).

import { COMMAND_NAMES, CommandError, HELP, OPERATOR_HELP, parseCommand } from "./commands.js";
import { complete, mentions } from "./names.js";
import { Outbox } from "./outbox.js";
import { afterRefusal, retryDelay } from "./reconnect.js";
import { current, join, link, pageClosing, quit, request, say } from "./session.js";
import { cleanText, nameColour } from "./text.js";
import { $, log, setLoginBusy, showHelp, showLoginError, showLoginForm, system } from "./view.js";

const QUIT_WORDS = new Set(["tata", "/quit"]);

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
  if (!link.invite && !password) {
    return showLoginError("Type the room password.", $("password"));
  }
  if (!name) return showLoginError("Type a name.", $("name"));
  $("login-error").hidden = true;
  setLoginBusy(true);
  join(name, password);
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
  const session = current();
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
  showLoginForm(link.invite, link.room);
  setLoginBusy(false);
  (link.invite ? $("name") : $("password")).focus();
});
// A member closing the tab leaves on purpose; say so rather than be seen as disconnected.
window.addEventListener("pagehide", pageClosing);

showLoginForm(link.invite, link.room);
setLoginBusy(false); // the form is ours now: Join works (index.html leaves it disabled)

// For the tests, and for anyone curious in the console: the rules shared with Python.
window.multichat = Object.freeze({
  Outbox,
  afterRefusal,
  retryDelay,
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
