"""Personal invites on disk (digests only, 0600, whole or not at all), and the invite strings
and QR code the host hands out, read back by the client's own parser."""

from __future__ import annotations

import io
import json
import stat
import time
from pathlib import Path

import pytest
import segno

from multichat.client.address import parse_address
from multichat.hosting import invite_links, invite_store
from multichat.hosting.invite_links import for_a_phone, pinned, qr_lines, room_invites
from multichat.hosting.invite_store import INVITES_FILE, InviteStoreError, keep, load
from multichat.hosting.launcher import Banner, announce_invites
from multichat.hosting.statefile import RoomState, read_state
from multichat.protocol.names import name_key
from multichat.server.invites import InviteBook, InviteError

FP = "0f" * 32
LINK = "https://a1b2-203-0-113-7.ngrok-free.app"


class Clock:
    """The book's clock, from now (a restart reads the file against the real time)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def kept_book(directory: Path, clock: Clock) -> InviteBook:
    book = InviteBook(clock=clock)
    keep(book, directory)
    return book


def test_invites_survive_a_restart_as_digests_only(tmp_path: Path) -> None:
    clock = Clock()
    book = kept_book(tmp_path, clock)
    invite, token = book.issue(uses=2, seconds=3600)
    path = tmp_path / INVITES_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token not in path.read_text(), "the token itself is never kept"

    # The room restarts: a new book, from the file.
    restarted = kept_book(tmp_path, clock)
    assert [i.id for i in restarted.live()] == [invite.id]
    assert restarted.redeem(token, name_key("bob"), name_key).uses == 2
    # The use is saved at once: another restart sees one use left.
    assert [i.uses for i in kept_book(tmp_path, clock).live()] == [1]
    restarted.redeem(token, name_key("bob"), name_key)  # bob again: no use spent
    assert [i.uses for i in kept_book(tmp_path, clock).live()] == [1]
    restarted.redeem(token, name_key("carol"), name_key)  # the last use
    with pytest.raises(InviteError):
        kept_book(tmp_path, clock).redeem(token, name_key("dave"), name_key)


def test_revoked_and_expired_invites_do_not_come_back(tmp_path: Path) -> None:
    clock = Clock()
    book = kept_book(tmp_path, clock)
    gone, _ = book.issue(uses=1, seconds=3600)
    short, _ = book.issue(uses=1, seconds=1)
    stays, _ = book.issue(uses=1, seconds=3600)
    book.revoke(gone.id)
    assert {i.invite.id for i in load(tmp_path / INVITES_FILE, now=clock.now + 2)} == {stays.id}
    assert short.id in {i.invite.id for i in load(tmp_path / INVITES_FILE, now=clock.now)}


@pytest.mark.parametrize(
    "content",
    [b"{", b"[]", b'{"version": 99, "invites": []}', b'{"version": 1, "invites": [{"id": 1}]}'],
)
def test_a_damaged_invites_file_is_one_line_and_left_alone(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / INVITES_FILE
    path.write_bytes(content)
    with pytest.raises(InviteStoreError) as caught:
        keep(InviteBook(), tmp_path)
    assert "\n" not in str(caught.value) and "damaged" in str(caught.value)
    assert path.read_bytes() == content


def test_no_file_yet_is_no_invites(tmp_path: Path) -> None:
    assert load(tmp_path / INVITES_FILE) == []


def test_a_full_disk_does_not_fail_the_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    book = kept_book(tmp_path, Clock())

    def full(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(invite_store, "write_private", full)
    _, token = book.issue(uses=1, seconds=60)
    book.redeem(token, name_key("ann"), name_key)
    assert "No space left on device" in caplog.text


def test_the_file_is_plain_json_a_host_can_read(tmp_path: Path) -> None:
    book = kept_book(tmp_path, Clock())
    invite, _ = book.issue("ann", uses=3, seconds=60)
    document = json.loads((tmp_path / INVITES_FILE).read_text())
    assert document["version"] == 1
    [entry] = document["invites"]
    assert (entry["id"], entry["name"], entry["uses"]) == (invite.id, "ann", 3)
    assert len(entry["digest"]) == 64


# ------------------------------------------------------------------ the strings friends get


def state(**changes: object) -> RoomState:
    fields: dict[str, object] = dict(
        pid=1,
        port=5002,
        token="t",
        room="Book club & co",
        started=0.0,
        lan=["192.168.1.20", "fe80::1"],
        https=LINK,
        tcp="tcp://0.tcp.ngrok.io:12345",
        fingerprint=FP,
    )
    fields.update(changes)
    return RoomState(**fields)  # type: ignore[arg-type]


def test_every_invite_reads_back_as_the_same_room_pinned_to_the_same_certificate() -> None:
    invites = room_invites(state())
    assert [i.where for i in invites] == ["public link", "TCP tunnel", "LAN", "LAN"]
    assert invites[0].text == LINK
    for invite in invites[1:]:
        address = parse_address(invite.text)
        assert address.fingerprint == FP and address.room == "Book club & co"
        assert address.invite is None
    hosts = [(a.host, a.port) for a in map(parse_address, (i.text for i in invites[1:]))]
    assert hosts == [("0.tcp.ngrok.io", 12345), ("192.168.1.20", 5002), ("fe80::1", 5002)]
    # Safe between single quotes in a shell: the room's name is escaped.
    assert all("'" not in i.text and " " not in i.text for i in invites)
    assert invites[1].command() == f"multichat connect '{invites[1].text}'"
    assert invites[0].command() == LINK


def test_personal_invites_carry_the_token_in_the_query_or_the_fragment() -> None:
    invites = room_invites(state(), token="tok_en-123")
    assert invites[0].text == f"{LINK}/#invite=tok_en-123"
    assert parse_address(invites[0].text).invite == "tok_en-123"
    for invite in invites[1:]:
        assert invite.text.endswith("&invite=tok_en-123")
        assert parse_address(invite.text).invite == "tok_en-123"


def test_without_a_tunnel_the_page_on_the_lan_is_the_phones() -> None:
    lan_only = state(https=None, tcp=None)
    invites = room_invites(lan_only)
    assert [i.where for i in invites] == ["LAN", "LAN", "LAN browser", "LAN browser"]
    pages = [i.text for i in invites[2:]]
    assert pages == ["https://192.168.1.20:5002/", "https://[fe80::1]:5002/"]
    assert not any(i.terminal for i in invites[2:])
    # A phone's camera opens a link in its browser; it cannot open multichat://.
    assert for_a_phone(invites) == invites[2]
    # A personal invite's token rides in the fragment, which the page reads.
    personal = room_invites(lan_only, token="tok_en-123")[2]
    assert personal.text == "https://192.168.1.20:5002/#invite=tok_en-123"
    # With a public link, that is the phone's, and the LAN's page is not offered.
    assert for_a_phone(room_invites(state())) == room_invites(state())[0]
    assert "LAN browser" not in [i.where for i in room_invites(state())]
    local = room_invites(state(https=None, tcp=None, lan=["127.0.0.1"]))
    assert [i.where for i in local] == ["this machine"] and for_a_phone(local) == local[0]
    assert for_a_phone([]) is None


def test_a_state_file_from_before_tls_has_only_the_link() -> None:
    assert [i.text for i in room_invites(state(fingerprint=""))] == [LINK]
    assert room_invites(state(fingerprint="", https=None)) == []


def read_qr(lines: list[str]) -> list[list[bool]]:
    """The modules drawn (True for dark), from half-block or `##` lines."""
    if any("#" in line for line in lines):
        return [
            [line[i : i + 2] == invite_links.ASCII_DARK for i in range(0, len(line), 2)]
            for line in lines
        ]
    halves = {" ": (True, True), "\u2580": (False, True), "\u2584": (True, False)}
    rows: list[list[bool]] = []
    for line in lines:
        pairs = [halves.get(c, (False, False)) for c in line]
        rows += [[top for top, _ in pairs], [bottom for _, bottom in pairs]]
    return rows


def expected_modules(data: str) -> list[list[bool]]:
    return [[bool(m) for m in row] for row in segno.make(data, micro=False).matrix_iter(border=4)]


@pytest.mark.parametrize("encoding", ["utf-8", None, "ascii", "cp437"])
def test_the_qr_code_draws_exactly_the_invite(encoding: str | None) -> None:
    text = pinned("192.168.1.20", 5002, "den", FP, "tok_en-123")
    lines = qr_lines(text, encoding)
    if encoding == "ascii":
        assert all(set(line) <= {"#", " "} for line in lines)
    else:
        assert any("\u2584" in line for line in lines)
    for line in lines:
        line.encode(encoding or "utf-8")
    drawn = read_qr(lines)
    want = expected_modules(text)
    assert drawn[: len(want)] == want
    # Two rows a line: an odd count leaves half a line, drawn as nothing (dark).
    assert len(drawn) - len(want) in (0, 1)
    assert all(all(row) for row in drawn[len(want) :])
    other = expected_modules(text.replace("tok_en-123", "tok_en-124"))
    assert drawn[: len(other)] != other, "the drawing depends on the text"


def test_qr_lines_are_a_block_every_line_as_wide() -> None:
    lines = qr_lines(LINK)
    assert len({len(line) for line in lines}) == 1


def test_a_state_file_from_before_tls_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "room-5002.json"
    path.write_text(json.dumps({"pid": 1, "port": 5002, "token": "t", "room": "den"}))
    old = read_state(path)
    assert old is not None and old.fingerprint == ""
    assert room_invites(old) == []


def banner_lines(**options: object) -> list[str]:
    banner = Banner("den", out=io.StringIO(), identity="kept in /data/den", **options)  # type: ignore[arg-type]
    banner.show(state(https=None, tcp=None), https=LINK, tcp="tcp://0.tcp.ngrok.io:12345")
    assert isinstance(banner.out, io.StringIO)
    return banner.out.getvalue().splitlines()


def test_the_banner_lists_every_invite_then_the_phones_qr_code() -> None:
    lines = banner_lines()
    start = lines.index("  Invites (one string each: where the room is, and how to trust it):")
    room = "Book club & co"
    assert lines[start + 1 : start + 7] == [
        f"    public link:  {LINK}",
        f"    TCP tunnel:   multichat connect '{pinned('0.tcp.ngrok.io', 12345, room, FP)}'",
        f"    LAN:          multichat connect '{pinned('192.168.1.20', 5002, room, FP)}'",
        f"    LAN:          multichat connect '{pinned('fe80::1', 5002, room, FP)}'",
        f"  Certificate: SHA-256 {FP}",
        "    (kept in /data/den)",
    ]
    heading = lines.index("  Scan with a phone (public link):")
    end = lines.index("", heading)
    drawn = read_qr([line[2:] for line in lines[heading + 1 : end]])
    assert drawn[: len(expected_modules(LINK))] == expected_modules(LINK)
    assert lines[-2].startswith("  Close the room:"), "the QR code comes before the last word"


def test_the_banner_without_the_qr_code() -> None:
    lines = banner_lines(qr=False)
    assert not any("Scan" in line or "\u2588" in line for line in lines)
    assert f"    public link:  {LINK}" in lines


def test_the_banner_without_a_tunnel_gives_browsers_the_page_on_the_lan() -> None:
    banner = Banner("den", out=io.StringIO(), rooms=("games",))
    banner.show(state(https=None, tcp=None), tunnel=False)
    assert isinstance(banner.out, io.StringIO)
    lines = banner.out.getvalue().splitlines()
    top = lines.index("  In a browser on your network: https://192.168.1.20:5002/")
    assert lines[top + 1] == "    games: https://192.168.1.20:5002/#room=games"
    assert lines[top + 2] == "  In a browser on your network: https://[fe80::1]:5002/"
    assert lines[top + 6] == "  Or in a terminal:"
    assert not any(line.startswith("  Open in a browser:") for line in lines)  # the public one's
    assert "    LAN browser:  https://192.168.1.20:5002/" in lines
    heading = lines.index("  Scan with a phone (LAN browser):")
    drawn = read_qr([line[2:] for line in lines[heading + 1 : lines.index("", heading)]])
    want = expected_modules("https://192.168.1.20:5002/")
    assert drawn[: len(want)] == want


def test_serve_announces_one_line_per_invite() -> None:
    out = io.StringIO()
    announce_invites(state(https=None, tcp=None), "kept in /data/den", out)
    assert out.getvalue().splitlines() == [
        f"Invite (LAN): {pinned('192.168.1.20', 5002, 'Book club & co', FP)}",
        f"Invite (LAN): {pinned('fe80::1', 5002, 'Book club & co', FP)}",
        "Invite (LAN browser): https://192.168.1.20:5002/",
        "Invite (LAN browser): https://[fe80::1]:5002/",
        f"Certificate: SHA-256 {FP} (kept in /data/den)",
    ]
