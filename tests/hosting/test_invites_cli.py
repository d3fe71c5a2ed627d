"""Invites end to end: `serve` and `up` print them (with a QR code, even into a pipe), the real
CLI's `invite`, `invites` and `revoke` drive the running room, and a restarted room keeps its
fingerprint and its personal invites. Real subprocesses, real TLS, all on 127.0.0.1 (the
stand-in ngrok agent's public addresses too)."""

from __future__ import annotations

import hashlib
import re
import ssl
import stat
from pathlib import Path

import pytest
import trio
from test_invite_store import expected_modules, read_qr
from test_up import PASSWORD, STEP, Cli, Running, cli, free_port, trust_standin

from multichat.client.address import Address, parse_address
from multichat.client.login import LoginRefused, login
from multichat.hosting.certificate import KEY_FILE

__all__ = ["cli"]  # the fixture, shared with test_up

INVITE = re.compile(r"multichat://[^'\s]+")


async def served_fingerprint(host: str, port: int) -> str:
    """The fingerprint Python's own `ssl` sees on the room's port (in a thread: it blocks)."""
    pem = await trio.to_thread.run_sync(lambda: ssl.get_server_certificate((host, port)))
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


async def serve(cli: Cli, port: int, *args: str) -> tuple[Running, Address]:
    """`multichat serve` on 127.0.0.1:`port`, and the invite it printed on stderr."""
    room = await cli.start(
        "serve", "--host", "127.0.0.1", "--port", str(port), *args, MULTICHAT_PASSWORD=PASSWORD
    )
    found = await room.wait_for(r"Invite \(this machine\): (\S+)\n", err=True)
    await room.wait_for(r"Certificate: SHA-256 [0-9a-f]{64} \(.*\)\n", err=True)
    return room, parse_address(found.group(1))


async def invite(cli: Cli, *args: str) -> tuple[str, list[str]]:
    """`multichat invite ARGS`: its output, and the multichat:// invites in it."""
    made = await cli.run("invite", *args)
    assert made.returncode == 0, made
    return made.out, INVITE.findall(made.out)


async def joins(address: Address, name: str, password: str = "") -> None:
    with trio.fail_after(STEP):
        stream, _, welcome = await login(address, name, password)
    await stream.aclose()
    assert welcome.name == name


async def refused(address: Address, name: str, password: str = "") -> LoginRefused:
    with trio.fail_after(STEP), pytest.raises(LoginRefused) as caught:
        await login(address, name, password)
    return caught.value


def found(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match is not None, f"{pattern!r} not in {text}"
    return match[1]


def qr_block(out: str, heading: str) -> list[str]:
    """The QR code's lines after `heading`, without their indent, up to the blank line."""
    lines = out[out.index(heading) :].splitlines()[1:]
    block = []
    for line in lines:
        if not line.strip():
            break
        block.append(line[2:])
    return block


async def test_a_restarted_room_keeps_its_fingerprint_and_its_invites(
    cli: Cli, tmp_path: Path
) -> None:
    data, port = tmp_path / "data", free_port()
    room, lan = await serve(cli, port, "--data-dir", str(data))
    assert lan.fingerprint is not None and lan.room == "multichat" and lan.invite is None
    assert await served_fingerprint("127.0.0.1", port) == lan.fingerprint
    assert stat.S_IMODE((data / KEY_FILE).stat().st_mode) == 0o600
    await joins(lan, "ann", PASSWORD)  # the plain invite: TLS pinned, the password still asked

    out, [personal] = await invite(cli, "--name", "bob", "--uses", "2", "--expires", "1h")
    assert out.startswith("Invite ") and "for bob only, 2 uses left" in out
    bobs = parse_address(personal)
    assert bobs.fingerprint == lan.fingerprint and bobs.invite is not None
    assert f"multichat connect '{personal}'" in out
    assert qr_block(out, "Or let them scan it"), "a QR code, though stdout is a pipe"
    listed = await cli.run("invites")
    [line] = listed.out.splitlines()
    assert re.fullmatch(r"[0-9a-f]{8}  for bob only, 2 uses left, until .* \(in (1h|59m)\)", line)
    assert bobs.invite not in listed.out, "never the token"
    await joins(bobs, "bob")

    assert (await cli.run("down")).returncode == 0
    assert await room.wait() == 0
    again, lan_again = await serve(cli, port, "--data-dir", str(data))
    assert lan_again == lan, "the same certificate, so the same invite"
    assert await served_fingerprint("127.0.0.1", port) == lan.fingerprint
    assert "for bob only, 1 use left" in (await cli.run("invites")).out
    await joins(bobs, "bob")  # the last use
    assert (await cli.run("invites")).out.startswith("No personal invites.")
    await joins(bobs, "bob")  # bob back after a drop: the room remembers it let him in
    assert (await cli.run("down")).returncode == 0
    assert await again.wait() == 0


async def test_invites_expire_are_revoked_and_keep_their_name(cli: Cli, tmp_path: Path) -> None:
    # Each refusal below counts as a wrong password; the login throttle allows 3 a minute.
    config = tmp_path / "limits.toml"
    config.write_text("[limits]\nfailed_passwords_per_minute = 100\n")
    room, lan = await serve(cli, free_port(), "--ephemeral", "--config", str(config))
    assert "changes every start" in room.err

    _, [short] = await invite(cli, "--expires", "2s")
    await trio.sleep(2.5)  # a subprocess's clock: no fake clock reaches it
    expired = await refused(parse_address(short), "ann")
    assert expired.code == "bad_invite" and "expired" in str(expired)

    _, [doomed] = await invite(cli, "--uses", "5")
    [line] = (await cli.run("invites")).out.splitlines()
    revoked = await cli.run("revoke", line.split()[0])
    assert revoked.returncode == 0 and revoked.out == f"revoked invite {line.split()[0]}\n"
    assert (await refused(parse_address(doomed), "ann")).code == "bad_invite"
    again = await cli.run("revoke", line.split()[0])
    assert again.returncode == 1 and again.err.count("\n") == 1 and "no invite" in again.err

    _, [bobs] = await invite(cli, "--name", "bob")
    for_bob = await refused(parse_address(bobs), "carol")
    assert for_bob.code == "bad_invite" and "'bob' only" in str(for_bob)
    taken = await refused(lan, "bob", PASSWORD)
    assert taken.code != "bad_invite", "the password does not get a name kept for an invite"
    await joins(parse_address(bobs), "bob")

    assert (await cli.run("down")).returncode == 0
    assert await room.wait() == 0


@pytest.mark.parametrize(
    ("args", "says", "code"),
    [
        (("--uses", "0"), "--uses must be between 1 and 1000", 2),
        (("--expires", "soon"), "is not a duration", 2),
        ((), "no room is up here", 1),
    ],
)
async def test_invite_mistakes_are_one_line(
    cli: Cli, args: tuple[str, ...], says: str, code: int
) -> None:
    made = await cli.run("invite", *args)
    assert made.returncode == code and made.out == ""
    assert made.err.count("\n") == 1 and says in made.err, made.err
    for command in ("invites", "revoke"):
        none = await cli.run(command, *(["x"] if command == "revoke" else []))
        assert none.returncode == 1 and none.err == "multichat: no room is up here\n"


async def test_the_up_banner_shows_the_invites_and_a_qr_code_into_a_pipe(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust_standin(cli, monkeypatch)
    data = tmp_path / "data"
    up, banner = await cli.up("--password", PASSWORD, "--data-dir", str(data), *cli.ngrok())
    assert banner.https is not None and banner.tcp is not None
    text = banner.text
    section = text[text.index("  Invites (") : text.index("  Certificate: SHA-256 ")]
    assert found(r"public link: +(\S+)\n", section) == banner.https
    tunnel = parse_address(found(r"TCP tunnel: +multichat connect '(\S+)'", section))
    lan = parse_address(found(r"(?:LAN|this machine): +multichat connect '(\S+)'", section))
    assert (tunnel.host, tunnel.port) == banner.tcp_address()
    assert lan.port == banner.port and tunnel.fingerprint == lan.fingerprint
    assert f"  Certificate: SHA-256 {lan.fingerprint}\n    (kept in {data})" in text
    # The QR code is the public link's, drawn though stdout is a pipe.
    drawn = read_qr(qr_block(text, "  Scan with a phone (public link):"))
    want = expected_modules(banner.https)
    assert drawn[: len(want)] == want
    assert text.index("Scan with a phone") < text.index("Close the room:")

    # The pinned invite works through the tunnel's TCP address (TLS after the PROXY header).
    await joins(tunnel, "far", PASSWORD)
    assert await served_fingerprint(*banner.lan_address()) == lan.fingerprint

    # A personal invite leads with the link, the token in its fragment.
    out, pinned = await invite(cli, "--name", "tab", "--no-qr")
    link = found(r"public link: +(https://\S+)", out)
    assert link.startswith(f"{banner.https}/#invite=")
    assert len(pinned) == 1 + max(1, len(banner.lan)) and "scan" not in out
    await joins(parse_address(link), "tab")  # over the HTTPS link, no password

    assert (await cli.run("down")).returncode == 0
    assert await up.wait() == 0


async def test_no_qr_leaves_the_code_out_and_ephemeral_says_the_fingerprint_changes(
    cli: Cli,
) -> None:
    up, banner = await cli.up("--no-tunnel", "--no-qr", "--ephemeral", "--password", PASSWORD)
    assert "  Invites (" in banner.text
    assert "Scan with a phone" not in banner.text
    assert not set("\u2580\u2584\u2588") & set(up.out)
    assert "changes every start" in banner.text
    assert (await cli.run("down")).returncode == 0
    assert await up.wait() == 0
    # Without --no-qr and without a tunnel, the phone's code is the page on the LAN (a
    # camera opens a link in the browser, never multichat://); with no LAN, this machine's.
    up, banner = await cli.up("--no-tunnel", "--ephemeral", "--password", PASSWORD)
    invites = banner.text[banner.text.index("  Invites (") :]
    if banner.lan:
        page = f"https://{banner.lan[0]}:{banner.port}/"
        assert f"  In a browser on your network: {page}\n" in banner.text
        assert banner.https is None  # not taken for the public link
        assert found(r"LAN browser: +(\S+)\n", invites) == page
        heading, phone = "  Scan with a phone (LAN browser):", page
    else:
        assert "In a browser on your network" not in banner.text
        heading, phone = "  Scan with a phone (this machine):", INVITE.findall(invites)[0]
    drawn = read_qr(qr_block(banner.text, heading))
    assert drawn[: len(expected_modules(phone))] == expected_modules(phone)
    # The page is served there, over TLS with the banner's certificate (reached on loopback:
    # the same listener).
    fingerprint = found(r"  Certificate: SHA-256 ([0-9a-f]{64})", banner.text)
    assert await served_fingerprint("127.0.0.1", banner.port) == fingerprint
    assert (await cli.run("down")).returncode == 0
    assert await up.wait() == 0


def test_nothing_shorter_than_sha256_is_pinned() -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        parse_address("multichat://h:1/?fp=" + "0" * 40)  # a SHA-1's length
