"""The room's certificate: made once and kept (key 0600), the host's own, or one per run; and
the fingerprint invites carry is what Python's own `ssl` sees on the room's port."""

from __future__ import annotations

import hashlib
import os
import ssl
import stat
from pathlib import Path

import pytest
import trio
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from chatpeer import PASSWORD, RELAXED
from multichat.hosting import certificate
from multichat.hosting.certificate import (
    CERT_FILE,
    KEY_FILE,
    CertificateError,
    RoomCertificate,
    for_this_run,
    from_files,
    kept_in,
    room_certificate,
)
from multichat.hosting.privatefile import write_private
from multichat.server.listeners import ChatServer

STEP = 10


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def der_fingerprint(pem_file: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem_file.read_text())).hexdigest()


def one_line(exc: pytest.ExceptionInfo[CertificateError]) -> str:
    message = str(exc.value)
    assert message and "\n" not in message
    return message


def test_the_first_start_makes_a_p256_certificate_and_keeps_it_private(tmp_path: Path) -> None:
    made = kept_in(tmp_path)
    cert_file, key_file = tmp_path / CERT_FILE, tmp_path / KEY_FILE
    assert mode(key_file) == 0o600
    assert mode(cert_file) == 0o600
    loaded = x509.load_pem_x509_certificate(cert_file.read_bytes())
    public = loaded.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp256r1"
    assert loaded.issuer == loaded.subject, "self-signed"
    assert made.fingerprint == der_fingerprint(cert_file)
    assert len(made.fingerprint) == 64 and made.fingerprint == made.fingerprint.lower()
    assert not made.ephemeral and str(tmp_path) in made.where
    assert not list(tmp_path.glob(".*tmp")), "no temporary file is left behind"


def test_a_restart_keeps_the_same_certificate(tmp_path: Path) -> None:
    first = kept_in(tmp_path)
    key_before = (tmp_path / KEY_FILE).read_bytes()
    again = kept_in(tmp_path)
    assert again.fingerprint == first.fingerprint
    assert (tmp_path / KEY_FILE).read_bytes() == key_before


def test_a_key_left_by_a_start_that_died_is_replaced(tmp_path: Path) -> None:
    # The key is written first: a key alone was never pinned by anyone.
    (tmp_path / KEY_FILE).write_bytes(b"half a start")
    made = kept_in(tmp_path)
    assert made.fingerprint == der_fingerprint(tmp_path / CERT_FILE)
    assert (tmp_path / KEY_FILE).read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_a_certificate_without_its_key_is_one_line_not_a_new_identity(tmp_path: Path) -> None:
    kept_in(tmp_path)
    (tmp_path / KEY_FILE).unlink()
    before = (tmp_path / CERT_FILE).read_bytes()
    with pytest.raises(CertificateError) as caught:
        kept_in(tmp_path)
    assert KEY_FILE in one_line(caught) and "invites" in one_line(caught)
    assert (tmp_path / CERT_FILE).read_bytes() == before, "never silently replaced"


def test_a_data_directory_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root writes through modes; a file where the directory should be stops anyone.
        target = tmp_path / "file"
        target.write_text("not a directory")
    else:
        target = tmp_path / "locked"
        target.mkdir(mode=0o500)
    with pytest.raises(CertificateError) as caught:
        kept_in(target)
    assert "cannot keep the room's certificate" in one_line(caught)


def test_ephemeral_certificates_differ_every_run_and_leave_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(certificate.tempfile, "tempdir", None)  # TMPDIR is read once
    first, second = for_this_run(), for_this_run()
    assert first.ephemeral and "changes every start" in first.where
    assert first.fingerprint != second.fingerprint
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def test_the_hosts_own_certificate_and_chain(ca: trustme.CA, tmp_path: Path) -> None:
    leaf = ca.issue_cert("chat.example")
    cert_file, key_file = tmp_path / "chain.pem", tmp_path / "key.pem"
    for index, blob in enumerate(leaf.cert_chain_pems):
        blob.write_to_path(str(cert_file), append=index > 0)
    leaf.private_key_pem.write_to_path(str(key_file))
    own = room_certificate(tmp_path / "data", cert_file, key_file)
    # The first certificate in the file is the room's, whatever chain follows it.
    assert (
        own.fingerprint
        == hashlib.sha256(
            ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
        ).hexdigest()
    )
    assert not (tmp_path / "data").exists(), "nothing is made when the host brings one"


@pytest.mark.parametrize(
    ("problem", "says"),
    [
        ("missing cert", "cannot read the certificate"),
        ("not pem", "holds no PEM certificate"),
        ("wrong key", "is it that certificate's key?"),
        ("missing key", "cannot read the key"),
    ],
)
def test_a_bad_certificate_or_key_is_one_line(
    ca: trustme.CA, tmp_path: Path, problem: str, says: str
) -> None:
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.issue_cert("a.example").cert_chain_pems[0].write_to_path(str(cert_file))
    ca.issue_cert("b.example").private_key_pem.write_to_path(str(key_file))
    if problem == "missing cert":
        cert_file.unlink()
    elif problem == "not pem":
        cert_file.write_text("hello")
    elif problem == "missing key":
        key_file.unlink()
    with pytest.raises(CertificateError) as caught:
        from_files(cert_file, key_file)
    assert says in one_line(caught)


def test_cert_and_key_options_go_together(tmp_path: Path) -> None:
    with pytest.raises(CertificateError) as caught:
        room_certificate(tmp_path, tmp_path / "cert.pem", None)
    assert "--tls-cert and --tls-key go together" in one_line(caught)


def test_no_data_directory_means_a_certificate_for_this_run() -> None:
    assert room_certificate(None).ephemeral


def test_private_files_are_0600_even_over_a_leftover_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    leftover = tmp_path / f".secret.{os.getpid()}.tmp"
    leftover.write_bytes(b"old")
    leftover.chmod(0o644)
    write_private(target, b"new")
    assert target.read_bytes() == b"new" and mode(target) == 0o600
    assert not leftover.exists()


async def served_fingerprint(made: RoomCertificate) -> str:
    """What Python's `ssl` module sees on the room's port, in a thread (it blocks)."""
    server = ChatServer(PASSWORD, limits=RELAXED, tls=made.context)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve, 0, "127.0.0.1")
        with trio.fail_after(STEP):
            pem = await trio.to_thread.run_sync(
                lambda: ssl.get_server_certificate(("127.0.0.1", port))
            )
        server.shutdown_nowait("test over")
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


async def test_python_ssl_sees_the_fingerprint_invites_carry(tmp_path: Path) -> None:
    made = kept_in(tmp_path)
    assert await served_fingerprint(made) == made.fingerprint
    assert await served_fingerprint(kept_in(tmp_path)) == made.fingerprint
    assert await served_fingerprint(for_this_run()) != made.fingerprint
