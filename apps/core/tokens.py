"""Signed, expiring, single-use verification tokens (itsdangerous).

The payload binds the user id to the address, so a token minted for one account cannot
verify another, and the dedicated salt keeps these signatures apart from every other use
of the app's secret. Single use is enforced by the store (``verified_at``), not the token.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer

SALT = "maillab.email-verification"


class TokenState(Enum):
    VALID = "valid"
    EXPIRED = "expired"
    INVALID = "invalid"


@dataclass(frozen=True)
class TokenCheck:
    state: TokenState
    user_id: int | None = None
    email: str | None = None


def _serializer(secret: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt=SALT)


def make_token(secret: str, user_id: int, email: str) -> str:
    return _serializer(secret).dumps({"uid": user_id, "email": email})


def check_token(secret: str, token: str, max_age: int) -> TokenCheck:
    try:
        payload = _serializer(secret).loads(token, max_age=max_age)
    except SignatureExpired:
        # Raised only after the signature was found valid, so this is a genuine, old token.
        return TokenCheck(TokenState.EXPIRED)
    except BadData:
        return TokenCheck(TokenState.INVALID)
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("uid"), int)
        or not isinstance(payload.get("email"), str)
    ):
        return TokenCheck(TokenState.INVALID)
    return TokenCheck(TokenState.VALID, payload["uid"], payload["email"])
