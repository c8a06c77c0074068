"""STARTTLS and AUTH (``--tls``, ``--auth``): a provider's submission port, spoken to by
smtplib as Flask-Mail speaks to it, with the certificate trusted by path and verified."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from fakesmtp.cli import smtp
from fakesmtp.server import FakeSMTP
from fakesmtp.tls import Credentials, TlsError, self_signed, server_context
from tests.fakesmtp.test_fakesmtp_cli import Proc

USER, PASSWORD = "maillab", "s3cret:with-colon"
MSG = b"Subject: over TLS\r\n\r\nVerify: https://app.test/verify/1\r\n"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def submission(make_server: Callable[..., FakeSMTP], certificate: tuple[Path, Path],
               ) -> Callable[..., FakeSMTP]:
    """``submission(latency=..., faults=...)``: a server that requires STARTTLS and AUTH."""
    def factory(**kw: object) -> FakeSMTP:
        return make_server(tls=server_context(*certificate),
                           credentials=Credentials(USER, PASSWORD), **kw)
    return factory


def _client(server: FakeSMTP, cafile: Path | None) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10)
    client.ehlo()
    client.starttls(context=ssl.create_default_context(cafile=cafile))
    client.ehlo()
    return client


def test_starttls_then_login_then_mail(submission, certificate, api_for) -> None:
    server = submission()
    with _client(server, certificate[0]) as client:
        assert isinstance(client.sock, ssl.SSLSocket)
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert "PLAIN" in client.esmtp_features["auth"] and "LOGIN" in client.esmtp_features[
            "auth"]
        client.login(USER, PASSWORD)
        client.sendmail("app@x.test", ["bob@x.test"], MSG)
    found = api_for(server).get("/api/messages?to=bob@x.test")
    assert [m["subject"] for m in found] == ["over TLS"]


def test_login_mechanism_works_too(submission, certificate) -> None:
    server = submission()
    with _client(server, certificate[0]) as client:
        client.user, client.password = USER, PASSWORD
        code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
        assert code == 235
        client.sendmail("app@x.test", ["bob@x.test"], MSG)


def test_a_wrong_password_is_535_and_counted(submission, certificate, api_for) -> None:
    server = submission()
    with _client(server, certificate[0]) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login(USER, "wrong")
        assert refused.value.smtp_code == 535
        with pytest.raises(smtplib.SMTPSenderRefused) as no_mail:
            client.sendmail("app@x.test", ["bob@x.test"], MSG)
        assert no_mail.value.smtp_code == 530  # still not authenticated
    stats = api_for(server).get("/api/stats")
    assert stats["received"] == 0
    # smtplib tries each mechanism the server offers: PLAIN, then LOGIN.
    assert stats["rejected"]["by_code"]["535"] == 2


def test_nothing_goes_in_the_clear(submission, api_for) -> None:
    server = submission()
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as client:
        client.ehlo()
        code, _ = client.docmd("AUTH", "PLAIN AG1haWxsYWIAczNjcmV0")
        assert code == 530  # "Must issue a STARTTLS command first"
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail("app@x.test", ["bob@x.test"], MSG)
        assert refused.value.smtp_code == 530
    assert api_for(server).get("/api/stats")["received"] == 0


def test_the_certificate_is_verified(submission) -> None:
    """Trusted by path, not by turning verification off: a client with the system's CAs
    refuses the self-signed certificate."""
    server = submission()
    with pytest.raises(ssl.SSLCertVerificationError):
        _client(server, None)


def test_starttls_and_auth_have_latency_and_faults(submission, certificate, api_for) -> None:
    server = submission(latency={"starttls": "30ms", "auth": "20ms"},
                        faults=["id=badlogin,phase=auth,reply=535,first=1"])
    with _client(server, certificate[0]) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.user, client.password = USER, PASSWORD
            client.auth("PLAIN", client.auth_plain)
        assert refused.value.smtp_code == 535
        assert b"rule=badlogin" in refused.value.smtp_error
        client.login(USER, PASSWORD)  # the rule fired once
        client.sendmail("app@x.test", ["bob@x.test"], MSG)
    stats = api_for(server).get("/api/stats")
    assert stats["latency"]["starttls"]["injected_p50_ms"] == 30.0
    assert stats["latency"]["auth"]["count"] == 2
    assert stats["rejected"]["by_rule"] == {"badlogin": 1}


def test_a_starttls_fault_refuses_the_handshake(submission, certificate) -> None:
    server = submission(faults=["id=notls,phase=starttls,reply=454"])
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as client:
        client.ehlo()
        with pytest.raises(smtplib.SMTPResponseException) as refused:
            client.starttls(context=ssl.create_default_context(cafile=certificate[0]))
        assert refused.value.smtp_code == 454


def test_auth_needs_tls() -> None:
    with pytest.raises(ValueError, match="AUTH needs TLS"):
        FakeSMTP(credentials=Credentials(USER, PASSWORD))


@pytest.mark.parametrize("text", ["nopassword", ":pw", "user:", "us\ter:pw"])
def test_bad_credentials_are_refused(text: str) -> None:
    with pytest.raises(TlsError):
        Credentials.parse(text)
    assert "pw" not in repr(Credentials("u", "pw"))


@pytest.mark.parametrize(("args", "flag", "hint"), [
    (["--auth", "u:p"], "--auth", "needs --tls"),
    (["--tls", "--auth", "nocolon"], "--auth", "USER:PASSWORD"),
    (["--tls-cert", "/nonexistent/cert.pem"], "--tls-cert", "go together"),
    (["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"],
     "--tls-cert", "no such file: /nonexistent/cert.pem"),
])
def test_bad_tls_flags_name_the_flag(args: list[str], flag: str, hint: str) -> None:
    result = CliRunner().invoke(smtp, ["--port", "0", "--api-port", "0", *args])
    assert result.exit_code == 2, (result.output, result.exception)
    assert hint in result.output, result.output


def test_a_key_that_is_not_the_certificates_is_refused(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path / "a")
    _, other_key = self_signed(tmp_path / "b")
    with pytest.raises(TlsError, match="cannot use"):
        server_context(cert, other_key)
    assert oct(other_key.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_the_command_serves_starttls_and_auth(tmp_path: Path, how: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m fakesmtp --tls --auth``: a self-signed certificate made at start, named on
    its output, trusted by path; the credentials from the flag or from FAKESMTP_AUTH."""
    auth = ["--auth", f"{USER}:{PASSWORD}"] if how == "flag" else []
    if how == "environment":
        monkeypatch.setenv("FAKESMTP_AUTH", f"{USER}:{PASSWORD}")
    proc = Proc("--port", "0", "--api-port", "0", "--tls", *auth)
    try:
        lines = proc.read_until("AUTH required")
        port = int(lines[0].rsplit(":", 1)[1])
        cert = Path(next(line for line in lines if "STARTTLS" in line).split()[4])
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.starttls(context=ssl.create_default_context(cafile=cert))
            client.login(USER, PASSWORD)
            client.sendmail("app@x.test", ["bob@x.test"], MSG)
        assert f"user {USER}" in lines[-1] and PASSWORD not in "\n".join(lines)
    finally:
        proc.popen.terminate()
        code, err = proc.finish()
    assert code == 0, err
    assert not cert.exists()  # the made certificate goes with the server
