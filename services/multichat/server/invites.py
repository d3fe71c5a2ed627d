"""Personal invites: a token that works instead of the room password, a few times, for a while.

`multichat invite` asks the running room for one; the token is shown once and kept here only as
a SHA-256 digest (128 random bits need no slow hash: nobody can guess them, only steal them).
A token may be bound to a name, which it then reserves. A used-up, expired, revoked or unknown
token is `bad_invite`, and counts as a wrong password for throttling. Pure but for the clock;
`on_change` hands the book to whoever keeps it across restarts (the data directory).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..protocol.events import Invite

# OAuth 2.0's minimum for access tokens (RFC 6749 section 10.10): 128 bits.
TOKEN_BYTES = 16
# A day: long enough to reach a friend by message, short enough that a leaked one dies.
DEFAULT_EXPIRY_SECONDS = 24 * 3600.0
# A party's worth of friends; an invite meant for more people is the room password.
MAX_USES = 1000
# A host hands out tens, not thousands; the oldest are forgotten past this.
MAX_INVITES = 1000


@dataclass(frozen=True, slots=True)
class StoredInvite:
    """An invite as kept: its digest, never its token."""

    invite: Invite
    digest: str  # hex SHA-256 of the token


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class InviteError(Exception):
    """Why a token does not let its bearer in."""


class InviteBook:
    """The room's personal invites."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._invites: dict[str, StoredInvite] = {}  # by id, oldest first
        # Tokens already used, by digest: the name key they let in, and until when. A member
        # whose connection drops rejoins with the same token without spending another use.
        self._claims: dict[str, tuple[str, Invite]] = {}
        self.on_change: Callable[[list[StoredInvite]], None] = lambda invites: None

    def restore(self, invites: list[StoredInvite]) -> None:
        """Invites kept from before a restart."""
        self._invites = {stored.invite.id: stored for stored in invites}

    def issue(
        self, name: str = "", uses: int = 1, seconds: float = DEFAULT_EXPIRY_SECONDS
    ) -> tuple[Invite, str]:
        """A new invite and its token (the only time the token is seen)."""
        if not 1 <= uses <= MAX_USES:
            raise InviteError(f"an invite is good for 1 to {MAX_USES} uses")
        if seconds <= 0:
            raise InviteError("an invite must last some time")
        token = secrets.token_urlsafe(TOKEN_BYTES)
        invite = Invite(secrets.token_hex(4), name, uses, self._clock() + seconds)
        if len(self._invites) >= MAX_INVITES:
            self._invites.pop(next(iter(self._invites)))
        self._invites[invite.id] = StoredInvite(invite, digest(token))
        self._changed()
        return invite, token

    def live(self) -> list[Invite]:
        """Invites that still work, oldest first."""
        now = self._clock()
        return [s.invite for s in self._invites.values() if s.invite.expires > now]

    def revoke(self, id: str) -> Invite:
        stored = self._invites.pop(id, None)
        self._claims = {d: c for d, c in self._claims.items() if c[1].id != id}
        if stored is None:
            raise InviteError(f"no invite {id!r}; `multichat invites` lists them")
        self._changed()
        return stored.invite

    def reserved(self, key: str, name_key: Callable[[str], str]) -> bool:
        """Whether a live invite keeps the name with uniqueness key `key` for someone."""
        return any(invite.name and name_key(invite.name) == key for invite in self.live())

    def redeem(self, token: str, key: str, name_key: Callable[[str], str]) -> Invite:
        """Use up one use of the invite `token` names, for the name with key `key`.

        Every stored digest is compared, in constant time, so timing says nothing of which.
        Raises InviteError.
        """
        wanted = digest(token)
        claim = self._claims.get(wanted)
        if claim is not None and claim[0] == key and claim[1].expires > self._clock():
            return claim[1]  # the same person coming back (a dropped connection)
        found: StoredInvite | None = None
        for stored in self._invites.values():
            if hmac.compare_digest(stored.digest, wanted):
                found = stored
        if found is None:
            raise InviteError("that invite is not valid (used up, expired, revoked or mistyped)")
        invite = found.invite
        if invite.expires <= self._clock() or invite.uses <= 0:
            raise InviteError("that invite is not valid (used up, expired, revoked or mistyped)")
        if invite.name and name_key(invite.name) != key:
            raise InviteError(f"that invite is for {invite.name!r} only")
        if len(self._claims) >= MAX_INVITES:
            self._claims.pop(next(iter(self._claims)))
        self._claims[wanted] = (key, invite)
        if invite.uses == 1:
            del self._invites[invite.id]
        else:
            self._invites[invite.id] = replace(found, invite=replace(invite, uses=invite.uses - 1))
        self._changed()
        return invite

    def _changed(self) -> None:
        self.on_change(list(self._invites.values()))
