// The lines a member typed, until their echo: as the terminal client keeps them
// (client/outbox.py), with the same rules. A line is queued, then sent and waiting for its
// echo, and then delivered, given up on, deferred to the next connection, or retried. A line
// sent on a connection that broke may have been delivered: a rejoin's replay says so.
// No page and no network here: session.js sends what `take` gives and shows what happens.

import { nameKey } from "./names.js";
import { cleanText, pyRepr, str } from "./text.js";

const LINE_REFUSALS = new Set(["too_long", "empty", "muted"]); // sending again cannot help
const LINE_DEFERRALS = new Set(["shutting_down", "not_joined"]); // may go after a rejoin
// The room's backplane (Redis) is away: the line goes again on this connection, this much
// later (a Redis restart takes seconds), as the terminal client does.
const LINE_RETRIES = new Set(["unavailable"]);
export const RETRY_UNAVAILABLE_MS = 2000;
// A private line to someone who is not there; requests (`/kick bob`) get the same code, so
// the error is matched to a line by the name it quotes.
const NO_SUCH_MEMBER = "no_such_member";

export class Outbox {
  constructor() {
    this.queued = []; // typed, not sent on this connection yet
    this.unacked = new Map(); // sent on this connection, echo not seen yet, by id
    this.deferred = []; // refused while the room was closing
    this.retrying = new Map(); // refused as unavailable, sent again soon, by id
    this.maybeDelivered = new Set(); // ids sent on a connection that broke
    this.nextId = 0;
    // Ids are ours alone in the room: the server hands a sender's id back on its echo.
    this.prefix = Array.from(crypto.getRandomValues(new Uint8Array(3)),
      (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // Every line typed and not yet delivered or given up on.
  pending() {
    return [...this.retrying.values(), ...this.deferred, ...this.unacked.values(),
      ...this.queued];
  }

  // Whether a line sent on this connection still waits for its echo.
  get awaitingEcho() {
    return this.unacked.size > 0;
  }

  // A typed line, queued with a fresh id; the page keeps its row in `row`.
  add(text, to = null, action = false) {
    this.nextId += 1;
    const line = { id: `${this.prefix}-${this.nextId}`, text, to, action, row: null };
    this.queued.push(line);
    return line;
  }

  // Every queued line, oldest first, from now on waiting for its echo.
  take() {
    const taken = this.queued.splice(0);
    for (const line of taken) this.unacked.set(line.id, line);
    return taken;
  }

  // The room echoed the line `id`: the line, delivered, if it is ours still.
  acknowledge(id) {
    const line = this.unacked.get(id) || this.retrying.get(id);
    if (!line) return undefined;
    this.unacked.delete(id);
    this.retrying.delete(id); // refused as "may have gone through", and it did
    this.maybeDelivered.delete(id);
    return line;
  }

  // The line an error refuses and what became of it: "dropped" (sending it again cannot
  // help), "retried" (`retryDue` after RETRY_UNAVAILABLE_MS), or "deferred" to the next
  // connection. Null if the error is no line's (a refused request).
  refuse(code, message, id) {
    let line;
    if (typeof id === "string") {
      // The server names the line: with a backplane, a refusal comes at once and the echoes
      // of earlier lines later, so "the oldest" would be the wrong one.
      line = this.unacked.get(id);
    } else if (LINE_REFUSALS.has(code) || LINE_DEFERRALS.has(code)) {
      // The room answers in order: the oldest line not yet echoed is the one.
      line = this.unacked.values().next().value;
    } else if (code === NO_SUCH_MEMBER) {
      line = [...this.unacked.values()].find((l) => l.to && message.includes(pyRepr(l.to)));
    }
    if (!line) return null;
    this.unacked.delete(line.id);
    if (LINE_RETRIES.has(code)) {
      this.retrying.set(line.id, line);
      return [line, "retried"];
    }
    if (LINE_DEFERRALS.has(code)) {
      this.deferred.push(line);
      return [line, "deferred"];
    }
    this.maybeDelivered.delete(line.id);
    return [line, "dropped"];
  }

  // A retried line's time has come: true if it went to the front of the queue (not if its
  // echo came meanwhile, or the connection broke and took it back).
  retryDue(line) {
    if (!this.retrying.delete(line.id)) return false;
    this.queued.unshift(line);
    return true;
  }

  // The connection is gone: lines not acknowledged go back to the front of the queue, in
  // the order typed.
  requeue() {
    const back = [...this.deferred, ...this.unacked.values()];
    for (const line of this.unacked.values()) this.maybeDelivered.add(line.id);
    this.queued.unshift(...back);
    this.deferred = [];
    this.unacked.clear();
  }

  // The queued line that a replayed message `frame` is (`me` is our name), taken off the
  // queue: by its id, or, for a line sent on a connection that broke, by what it says.
  claimReplayed(frame, me) {
    const echoes = (line) => (typeof frame.id === "string" && frame.id === line.id)
      || (str(frame.from) === me && this.maybeDelivered.has(line.id)
        && cleanText(line.text) === str(frame.text)
        && nameKey(line.to || "") === nameKey(str(frame.to))
        && Boolean(line.action) === (frame.action === true));
    const at = this.queued.findIndex(echoes);
    if (at < 0) return undefined;
    const [line] = this.queued.splice(at, 1);
    this.maybeDelivered.delete(line.id);
    return line;
  }
}
