// When a lost connection is tried again, and when the trying stops: the policy of
// client/reconnect.py, with its numbers and its refusal codes (a test holds the two together).
// No page and no network here: session.js asks.

// About 40 s of trying in all (0.5, 1, 2, 4, 8, 8, ... s): long enough for a room to restart.
export const RECONNECT_TRIES = 8;
const RECONNECT_FIRST_MS = 500;
const RECONNECT_MAX_MS = 8000;
// Spread members' retries so a restarted room is not hit by all of them in the same instant.
const RECONNECT_JITTER = 0.2;
// The server keeps a connection that went silent up to 150 s before it lets the name go; a
// rejoin refused with "name_taken" keeps trying that long without using up tries.
const NAME_HELD_MS = 160000;

// Login refusals that retrying cannot fix; others (a name still held by our old connection, a
// room restarting or full) may clear up while reconnecting. A room gone after a restart (the
// host no longer makes it) is one too.
const FATAL_LOGIN = new Set(["bad_password", "bad_name", "unsupported_version", "bad_invite",
  "no_such_room", "bad_room"]);
// The server closed on us on purpose; coming back would do it again (or be refused).
export const KICKS = new Set(["flooding", "kicked", "banned"]);

// Milliseconds to wait before reconnect try `tried` (1-based), jittered.
export function retryDelay(tried) {
  const backoff = Math.min(RECONNECT_MAX_MS, RECONNECT_FIRST_MS * 2 ** (tried - 1));
  return backoff * (1 - RECONNECT_JITTER + Math.random() * 2 * RECONNECT_JITTER);
}

// What the room's refusal (`code`) of a rejoin means, `lostForMs` after the loss: banned
// meanwhile ("kicked"), no use trying again ("give_up"), try again ("retry"), or try again
// without counting the try ("retry_uncounted": our old connection still holds the name).
export function afterRefusal(code, lostForMs) {
  if (code === "banned") return "kicked";
  if (FATAL_LOGIN.has(code)) return "give_up";
  if (code === "name_taken" && lostForMs < NAME_HELD_MS) return "retry_uncounted";
  return "retry";
}
