"""fakesmtp's pytest plugin (fakesmtp/pytest_plugin.py), run as a user's suite would run it:
inner test files in pytester's folder, with the plugin loaded from its entry point."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

SEND = '''
import smtplib, socket
from email.message import EmailMessage
import pytest


def send(fakesmtp, to, subject="Confirm your address", timeout=5):
    msg = EmailMessage()
    msg["From"] = "app@example.test"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = "<one@example.test>"
    msg.set_content("Confirm: http://app.test/verify/abc and http://app.test/help")
    with smtplib.SMTP(fakesmtp.host, fakesmtp.port, timeout=timeout) as smtp:
        smtp.send_message(msg)
'''


def run(pytester: pytest.Pytester, body: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_user=SEND + body)
    return pytester.runpytest_subprocess("-p", "no:randomly", *args)


def test_the_email_arrives_and_its_link_is_found(pytester: pytest.Pytester) -> None:
    result = run(pytester, '''
def test_arrives(fakesmtp, fakesmtp_address):
    send(fakesmtp, fakesmtp_address)
    message = fakesmtp.wait_for(to=fakesmtp_address, subject="Confirm")
    assert message.link("http://app.test/verify/") == "http://app.test/verify/abc"
    assert message.header("Message-ID") == "<one@example.test>"
    assert [m.subject for m in fakesmtp.messages(to=fakesmtp_address)] == [message.subject]


def test_each_test_starts_empty(fakesmtp):
    assert fakesmtp.messages() == []
''')
    result.assert_outcomes(passed=2)


def test_faults_by_count_are_scoped_to_the_test_and_its_address(
        pytester: pytest.Pytester) -> None:
    result = run(pytester, '''
def test_451_twice_then_accepted(fakesmtp, fakesmtp_address):
    fakesmtp.reject(fakesmtp_address, 451, times=2)
    other = fakesmtp.address()
    send(fakesmtp, other)  # another address meets no fault
    refused = 0
    for _ in range(3):
        try:
            send(fakesmtp, fakesmtp_address)
            break
        except smtplib.SMTPRecipientsRefused:
            refused += 1
    assert refused == 2 and len(fakesmtp.messages(to=fakesmtp_address)) == 1


def test_the_next_test_meets_no_fault(fakesmtp, fakesmtp_address):
    send(fakesmtp, fakesmtp_address)


def test_stored_then_cut_makes_a_retry_a_duplicate(fakesmtp, fakesmtp_address):
    fakesmtp.drop_after_store(fakesmtp_address)
    with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError)):
        send(fakesmtp, fakesmtp_address)
    send(fakesmtp, fakesmtp_address)
    assert len(fakesmtp.messages(to=fakesmtp_address)) == 2


def test_a_hang_times_out(fakesmtp, fakesmtp_address):
    fakesmtp.hang(fakesmtp_address)
    with pytest.raises((socket.timeout, TimeoutError, smtplib.SMTPServerDisconnected)):
        send(fakesmtp, fakesmtp_address, timeout=1)


def test_an_outage_for_a_block(fakesmtp, fakesmtp_address):
    with fakesmtp.outage():
        with pytest.raises(smtplib.SMTPException):
            send(fakesmtp, fakesmtp_address)
    send(fakesmtp, fakesmtp_address)
    assert len(fakesmtp.messages(to=fakesmtp_address)) == 1
''', "-n", "2")
    result.assert_outcomes(passed=5)


def test_the_marker_and_the_option_set_latency_and_faults(pytester: pytest.Pytester) -> None:
    result = run(pytester, '''
import time


@pytest.mark.fakesmtp(latency="300ms")
def test_slow(fakesmtp, fakesmtp_address):
    started = time.monotonic()
    send(fakesmtp, fakesmtp_address)
    assert time.monotonic() - started >= 0.3


@pytest.mark.fakesmtp(faults=["id=no,phase=rcpt,reply=550"])
def test_refused(fakesmtp, fakesmtp_address):
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(fakesmtp, fakesmtp_address)


def test_default_latency_from_the_option(fakesmtp, fakesmtp_address):
    started = time.monotonic()
    send(fakesmtp, fakesmtp_address)
    assert time.monotonic() - started >= 0.2


@pytest.mark.fakesmtp(latenzy="1s")
def test_a_misspelt_marker_is_named(fakesmtp):
    pass
''', "--fakesmtp-latency", "200ms")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*unknown argument 'latenzy'; known: latency, faults*"])


def test_a_failing_test_shows_what_arrived(pytester: pytest.Pytester) -> None:
    result = run(pytester, '''
def test_waits_for_the_wrong_subject(fakesmtp, fakesmtp_address):
    send(fakesmtp, fakesmtp_address, subject="Your receipt")
    fakesmtp.wait_for(to=fakesmtp_address, subject="Welcome", timeout=0.3)


def test_asks_for_a_link_it_lacks(fakesmtp, fakesmtp_address):
    send(fakesmtp, fakesmtp_address)
    fakesmtp.wait_for(to=fakesmtp_address).link("https://elsewhere/")
''')
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*no email to *@fakesmtp.test with 'Welcome' in its subject within 0.3 s; arrived:*"
        "Your receipt*",
        "*fakesmtp: 1 messages received*",
        "*'Your receipt' (Message-ID <one@example.test>)*",
        "*no link starting with 'https://elsewhere/' in 'Confirm your address'; its links:*"
        "http://app.test/verify/abc*",
    ])


def test_settings_for_flask_mail_mailman_and_django(pytester: pytest.Pytester) -> None:
    result = run(pytester, '''
def test_settings(fakesmtp):
    assert fakesmtp.flask_mail_config()["MAIL_PORT"] == fakesmtp.port
    assert fakesmtp.flask_mail_config()["MAIL_SUPPRESS_SEND"] is False
    assert fakesmtp.flask_mailman_config()["MAIL_SERVER"] == "127.0.0.1"
    assert fakesmtp.django_settings()["EMAIL_PORT"] == fakesmtp.port
''')
    result.assert_outcomes(passed=1)


def test_a_suite_that_asks_for_no_fixture_starts_no_server(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_nothing():\n    assert True\n")
    result = pytester.runpytest_subprocess("-p", "no:randomly", "--setup-plan")
    result.assert_outcomes()
    assert "fakesmtp_server" not in result.stdout.str()


def test_the_ledger_links_a_retry_to_its_first_try(pytester: pytest.Pytester) -> None:
    result = run(pytester, '''
def test_451_then_stored(fakesmtp, fakesmtp_address):
    fakesmtp.reject(fakesmtp_address, 451, times=1)
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(fakesmtp, fakesmtp_address)
    send(fakesmtp, fakesmtp_address)
    first, second = fakesmtp.assert_attempts(fakesmtp_address, 2)
    assert first["outcome"] == "cut" and first["refused"][fakesmtp_address].startswith("451")
    assert first["fault"] == "r1 at rcpt: reply 451"
    assert second["outcome"] == "stored" and second["message_id"] == "<one@example.test>"
    assert set(second["phases"]) >= {"mail", "rcpt", "data", "eom"}
    fakesmtp.assert_delivered_once(fakesmtp_address)


def test_stored_then_cut_is_a_duplicate_with_the_same_message_id(fakesmtp, fakesmtp_address):
    fakesmtp.drop_after_store(fakesmtp_address)
    with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError)):
        send(fakesmtp, fakesmtp_address)
    send(fakesmtp, fakesmtp_address)
    first, second = fakesmtp.assert_attempts(fakesmtp_address, 2)
    assert first["outcome"] == "stored, then cut" and second["outcome"] == "stored"
    assert first["message_id"] == second["message_id"] == "<one@example.test>"
    with pytest.raises(AssertionError, match="expected one email to .*, got 2"):
        fakesmtp.assert_delivered_once(fakesmtp_address)


def test_a_hang_is_cut_by_the_client(fakesmtp, fakesmtp_address):
    fakesmtp.hang(fakesmtp_address)
    with pytest.raises((socket.timeout, TimeoutError, smtplib.SMTPServerDisconnected)):
        send(fakesmtp, fakesmtp_address, timeout=1)
    fakesmtp.assert_no_email(fakesmtp_address, within=0.3)
    [attempt] = fakesmtp.assert_attempts(fakesmtp_address, 1)
    assert attempt["fault"] == "h1 at eom: hang"
''')
    result.assert_outcomes(passed=3)


def test_every_helper_says_what_arrived_and_what_was_tried(pytester: pytest.Pytester) -> None:
    result = run(pytester, '''
def test_none_arrived(fakesmtp, fakesmtp_address):
    fakesmtp.reject(fakesmtp_address, 550)
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(fakesmtp, fakesmtp_address)
    fakesmtp.assert_delivered_once(fakesmtp_address, timeout=0.3)


def test_one_arrived_unexpectedly(fakesmtp, fakesmtp_address):
    send(fakesmtp, fakesmtp_address)
    fakesmtp.assert_no_email(fakesmtp_address, within=0.3)


def test_wrong_count_of_tries(fakesmtp, fakesmtp_address):
    send(fakesmtp, fakesmtp_address)
    fakesmtp.assert_attempts(fakesmtp_address, 3)
''')
    result.assert_outcomes(failed=3)
    # fnmatch reads [ as a class: ? stands for the lists' brackets and quotes.
    result.stdout.fnmatch_lines([
        "*expected one email to *, got none; arrived for *: nothing; its SMTP transactions:"
        " ??cut, met r1 at rcpt: reply 550??",
        "*expected no email to * within 0.3 s; arrived for *: ???Confirm your address?*",
        "*expected 3 SMTP transactions for *, saw 1; *?stored, Message-ID <one@example.test>??",
        "*fakesmtp: 1 SMTP transactions*",
    ], consecutive=False)


def test_the_ledger_reads_a_message_id_from_the_header_only() -> None:
    from fakesmtp.ledger import message_id

    assert message_id(b"Subject: a\r\nMessage-ID: <1@x>\r\n\r\nbody") == "<1@x>"
    assert message_id(b"message-id:\n <folded@x>\nSubject: b\n\nbody") == "<folded@x>"
    assert message_id(b"Subject: c\r\n\r\nMessage-ID: <in the body@x>") is None
    assert message_id(b"") is None


def test_starttls_and_auth_as_a_providers_port(pytester: pytest.Pytester) -> None:
    result = run(pytester, '''
import ssl


def test_login_then_send(fakesmtp, fakesmtp_address):
    assert fakesmtp.tls and fakesmtp.username == "shop"
    assert fakesmtp.flask_mail_config()["MAIL_USE_TLS"] is True
    assert fakesmtp.django_settings()["EMAIL_HOST_PASSWORD"] == "s3cret-pw"
    context = ssl.create_default_context(cafile=fakesmtp.ca_file)
    with smtplib.SMTP(fakesmtp.host, fakesmtp.port, timeout=5) as smtp:
        smtp.starttls(context=context)
        smtp.login(fakesmtp.username, fakesmtp.password)
        smtp.sendmail("app@example.test", [fakesmtp_address], "Subject: hi\\r\\n\\r\\nhi")
    fakesmtp.assert_delivered_once(fakesmtp_address)


def test_plain_mail_is_refused(fakesmtp, fakesmtp_address):
    with pytest.raises(smtplib.SMTPSenderRefused, match="530"):
        send(fakesmtp, fakesmtp_address)
''', "--fakesmtp-tls", "--fakesmtp-auth", "shop:s3cret-pw")
    result.assert_outcomes(passed=2)


def test_a_bad_tls_setting_is_named(pytester: pytest.Pytester) -> None:
    result = run(pytester, "def test_x(fakesmtp):\n    pass\n", "--fakesmtp-auth", "shop:pw")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*--fakesmtp-auth needs --fakesmtp-tls*"])


def test_the_latency_method_slows_the_next_message(pytester: pytest.Pytester) -> None:
    result = run(pytester, '''
import time


def test_latency(fakesmtp, fakesmtp_address):
    fakesmtp.latency("250ms")
    started = time.monotonic()
    send(fakesmtp, fakesmtp_address)
    assert time.monotonic() - started >= 0.25
''')
    result.assert_outcomes(passed=1)


def test_bad_settings_and_rules_are_named(pytester: pytest.Pytester) -> None:
    result = run(pytester, '''
def test_bad_rule(fakesmtp):
    fakesmtp.fault("id=x,phase=nowhere,reply=451")
''')
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*fakesmtp refused PATCH /api/config: *phase*nowhere*"])
    result = run(pytester, "def test_x(fakesmtp):\n    pass\n", "--fakesmtp-tls",
                 "--fakesmtp-auth", "no-colon")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*--fakesmtp-auth: 'no-colon' is not USER:PASSWORD*"])
