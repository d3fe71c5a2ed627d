"""The room's TLS identity: a self-signed certificate kept in its data directory, or the host's.

Friends do not trust the certificate through a CA: an invite carries its fingerprint (SHA-256
of the certificate's DER) and `multichat connect` compares it before it sends anything, as SSH
compares a host key. So the certificate must stay the same across restarts: it is made once,
at the first start, and kept in the data directory beside the room's history (the key mode
0600). `--tls-cert FILE --tls-key FILE` bring the host's own (a real name's, from a CA: then
browsers on the LAN trust it too); `--ephemeral` makes a fresh one for each run.

ECDSA P-256: every TLS 1.2 and 1.3 implementation speaks it, and it is made in a millisecond
where RSA-2048 takes a noticeable fraction of a second.
"""

from __future__ import annotations

import datetime
import hashlib
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..server.tls import server_context
from .privatefile import write_private

CERT_FILE = "tls-cert.pem"
KEY_FILE = "tls-key.pem"
# The subject of a certificate nobody checks by name: the invite pins the certificate itself.
COMMON_NAME = "multichat room"
# A pinned certificate's dates are not checked by our client, but other TLS tools refuse an
# expired one, and renewing would change the fingerprint every invite carries: outlive the room.
VALIDITY_DAYS = 20 * 365
# Clocks disagree; a certificate "not yet valid" by a few minutes would fail for nothing.
BACKDATE = datetime.timedelta(days=1)
# A certificate chain and a key are a few KiB; a larger file is not one.
MAX_PEM_BYTES = 1024 * 1024


class CertificateError(Exception):
    """The room's certificate cannot be made or used; the message is one line, for the host."""


@dataclass(frozen=True)
class RoomCertificate:
    """What the room serves TLS with, and what invites pin."""

    context: ssl.SSLContext
    fingerprint: str  # hex SHA-256 of the certificate's DER, lowercase
    where: str  # for the host: where it is kept, or that it lasts this run only
    ephemeral: bool = False  # a new one (and fingerprint) every start


def fingerprint(der: bytes) -> str:
    """The fingerprint invites carry: SHA-256 of the DER certificate, lowercase hex."""
    return hashlib.sha256(der).hexdigest()


def new_certificate() -> tuple[bytes, bytes]:
    """A new self-signed certificate and its private key, both PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, COMMON_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def kept_in(directory: Path) -> RoomCertificate:
    """The certificate kept in the data directory `directory`, made there at the first start.

    Raises CertificateError.
    """
    cert_file, key_file = directory / CERT_FILE, directory / KEY_FILE
    if not cert_file.exists():
        # The key is written first and the certificate last, so a start that died in between
        # left a key nobody has pinned anything to: making both again loses nothing.
        cert_pem, key_pem = new_certificate()
        try:
            write_private(key_file, key_pem)
            write_private(cert_file, cert_pem)
        except OSError as exc:
            raise CertificateError(
                f"cannot keep the room's certificate in {directory}: {exc.strerror or exc}"
            ) from None
    elif not key_file.exists():
        raise CertificateError(
            f"{cert_file} has no key beside it ({KEY_FILE}); restore it, or remove the "
            "certificate to make a new one (earlier invites then stop working)"
        )
    certificate = from_files(cert_file, key_file)
    return RoomCertificate(certificate.context, certificate.fingerprint, f"kept in {directory}")


def for_this_run() -> RoomCertificate:
    """A new certificate that lives in memory for this run only (`--ephemeral`)."""
    cert_pem, key_pem = new_certificate()
    # `load_cert_chain` reads files only; they live a moment, in a directory only we can read.
    with tempfile.TemporaryDirectory(prefix="multichat-tls-") as temporary:
        cert_file, key_file = Path(temporary) / CERT_FILE, Path(temporary) / KEY_FILE
        write_private(key_file, key_pem)
        write_private(cert_file, cert_pem)
        certificate = from_files(cert_file, key_file)
    return RoomCertificate(
        certificate.context,
        certificate.fingerprint,
        "new for this run (--ephemeral): it changes every start",
        ephemeral=True,
    )


def from_files(cert_file: Path, key_file: Path) -> RoomCertificate:
    """The host's own certificate (the first in `cert_file`, a chain may follow) and key.

    Raises CertificateError.
    """
    try:
        with cert_file.open("rb") as f:
            pem = f.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise CertificateError(
            f"cannot read the certificate {cert_file}: {exc.strerror or exc}"
        ) from None
    if len(pem) > MAX_PEM_BYTES:
        raise CertificateError(f"{cert_file} is too large to be a certificate")
    try:
        leaf = x509.load_pem_x509_certificates(pem)[0]
    except ValueError:
        raise CertificateError(f"{cert_file} holds no PEM certificate") from None
    try:
        context = server_context(str(cert_file), str(key_file))
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        raise CertificateError(
            f"cannot use {key_file} with {cert_file} ({reason}): is it that certificate's key?"
        ) from None
    except OSError as exc:
        raise CertificateError(f"cannot read the key {key_file}: {exc.strerror or exc}") from None
    der = leaf.public_bytes(serialization.Encoding.DER)
    return RoomCertificate(context, fingerprint(der), f"from {cert_file}")


def room_certificate(
    data_dir: Path | None, cert_file: Path | None = None, key_file: Path | None = None
) -> RoomCertificate:
    """The certificate `serve` and `up` use: the host's files, else the data directory's, else
    (no data directory: `--ephemeral`) one for this run. Raises CertificateError."""
    if (cert_file is None) != (key_file is None):
        raise CertificateError("--tls-cert and --tls-key go together: give both, or neither")
    if cert_file is not None and key_file is not None:
        return from_files(cert_file, key_file)
    if data_dir is None:
        return for_this_run()
    return kept_in(data_dir)
