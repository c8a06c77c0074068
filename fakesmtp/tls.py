"""STARTTLS and AUTH, as a provider's submission port (587) asks for them.

``maillab smtp --tls`` makes the SMTP port offer STARTTLS and refuse mail before it (530); with
``--auth USER:PASSWORD`` it also refuses mail before a successful AUTH PLAIN or LOGIN (530),
and answers a wrong password with 535. The certificate is one given by path
(``--tls-cert``/``--tls-key``) or, by default, a self-signed one made at start
(:func:`self_signed`) for ``localhost``, ``127.0.0.1`` and ``::1``: a client that should trust
it (the lab's app) is given the certificate as its CA file (``MAILLAB_SMTP_CA_FILE``); nothing
turns verification off.

aiosmtpd does the protocol (``tls_context``, ``require_starttls``, ``authenticator``); this
module makes the certificate and the context, and checks credentials.
"""

from __future__ import annotations

import datetime
import hmac
import ipaddress
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import AuthResult, LoginPassword

CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
AUTH_MECHANISMS = ("PLAIN", "LOGIN")  # aiosmtpd's built-in ones; what providers offer


class TlsError(ValueError):
    """A certificate, key or credential that cannot be used; the message says which."""


@dataclass(frozen=True)
class Credentials:
    """The one login the server accepts. ``repr`` hides the password."""

    user: str
    password: str

    @classmethod
    def parse(cls, text: str) -> Credentials:
        """``user:password`` (the password may hold colons)."""
        user, colon, password = text.partition(":")
        if not colon or not user or not password:
            raise TlsError("expected USER:PASSWORD, both non-empty")
        if any(not c.isprintable() for c in text):
            raise TlsError("USER:PASSWORD must be printable characters")
        return cls(user, password)

    def __repr__(self) -> str:
        return f"Credentials(user={self.user!r}, password=...)"

    def authenticator(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        """aiosmtpd's ``authenticator`` hook: PLAIN and LOGIN hand it a LoginPassword."""
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = (hmac.compare_digest(auth_data.login, self.user.encode())
              & hmac.compare_digest(auth_data.password, self.password.encode()))
        return AuthResult(success=bool(ok), handled=False)


def self_signed(folder: Path, names: Sequence[str] = LOOPBACK_NAMES) -> tuple[Path, Path]:
    """A new key and a self-signed certificate for ``names`` (host names and IP addresses),
    valid from an hour ago for 30 days, written to ``folder`` (``cert.pem``; ``key.pem``,
    readable by its owner only). Returns both paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fakesmtp.localhost")])
    alternatives: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternatives.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / CERT_FILE, folder / KEY_FILE
    key_bytes = key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The server side of STARTTLS, from a PEM certificate (chain) and its key."""
    for path in (cert, key):
        if not path.is_file():
            raise TlsError(f"no such file: {path}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as err:
        raise TlsError(f"cannot use {cert} with {key}: {err.strerror or err}") from None
    return context
