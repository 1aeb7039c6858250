"""Signed, expiring room tokens (HMAC-SHA256), checked before anyone joins a room.

A token is three url-safe fields joined by dots::

    kf1.<claims>.<mac>

* ``kf1``: format tag and version.
* ``claims``: unpadded base64url of compact JSON ``{"r": room, "p": participant,
  "o": "send"|"receive", "e": expiry}`` (``e`` in whole seconds of the caller's clock).
* ``mac``: unpadded base64url of ``HMAC-SHA256(secret, b"kf1." + claims)`` (32 bytes).

The clock is always passed in (``now``), so expiry is testable and the module does no I/O.
:func:`verify_token` checks the MAC (constant time) before it looks at any claim, and raises:

* :class:`TokenInvalid` (HTTP 401): not a token, damaged, or signed with another secret;
* :class:`TokenExpired`, :class:`TokenWrongRoom`, :class:`TokenWrongRole` (all
  :class:`TokenForbidden`, HTTP 403): a genuine token that does not grant this.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
from dataclasses import dataclass
from typing import Literal

Role = Literal["send", "receive"]
ROLES: tuple[str, ...] = ("send", "receive")
TOKEN_PREFIX = "kf1"
MAX_TOKEN_LEN = 2048
MAX_NAME_LEN = 128
"""Longest room or participant name (characters)."""
MAX_TOKEN_TTL_S = 24 * 3600
"""Longest token lifetime: ``make_token`` refuses a longer ``ttl_s`` and ``verify_token`` a
token whose expiry is further away than this (bearer tokens without revocation: a leaked one
is good for at most a day)."""


class TokenError(Exception):
    """A token does not let its bearer in; ``http_status`` says how to answer."""

    http_status = 401


class TokenInvalid(TokenError):
    """Malformed, damaged or signed with another key (401 Unauthorized)."""

    http_status = 401


class TokenForbidden(TokenError):
    """A genuine token that does not grant this access (403 Forbidden)."""

    http_status = 403


class TokenExpired(TokenForbidden):
    """The token's expiry time has passed."""


class TokenTooLong(TokenForbidden):
    """The token's expiry is further away than :data:`MAX_TOKEN_TTL_S`."""


class TokenWrongRoom(TokenForbidden):
    """The token was issued for another room."""


class TokenWrongRole(TokenForbidden):
    """The token grants another role (e.g. ``receive`` where ``send`` is needed)."""


@dataclass(frozen=True)
class TokenClaims:
    room: str
    participant: str
    role: Role
    expires: int
    """Expiry, in whole seconds of the issuer's clock."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not text or any(c not in _B64_CHARS for c in text):
        raise TokenInvalid("token field is not base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenInvalid("token field is not base64url") from None
    if _b64encode(raw) != text:  # one spelling per value: no malleable padding bits
        raise TokenInvalid("token field is not canonical base64url")
    return raw


_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _mac(secret: bytes, signed: bytes) -> bytes:
    return hmac.new(secret, signed, hashlib.sha256).digest()


def _check_name(what: str, value: object) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME_LEN:
        raise ValueError(f"{what} must be a string of 1..{MAX_NAME_LEN} characters")
    if not value.isprintable():
        raise ValueError(f"{what} must be printable")
    return value


def make_token(
    secret: bytes, room: str, participant: str, role: Role, ttl_s: float, now: float
) -> str:
    """A token for ``participant`` to join ``room`` as ``role`` until ``now + ttl_s``."""
    if not isinstance(secret, bytes) or len(secret) < 16:
        raise ValueError("secret must be at least 16 bytes")
    _check_name("room", room)
    _check_name("participant", participant)
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if not ttl_s > 0 or not math.isfinite(ttl_s):
        raise ValueError("ttl_s must be a positive number of seconds")
    if ttl_s > MAX_TOKEN_TTL_S:
        raise ValueError(f"ttl_s must be at most {MAX_TOKEN_TTL_S} s (one day)")
    expires = math.floor(now + ttl_s)
    body = {"r": room, "p": participant, "o": role, "e": expires}
    claims = _b64encode(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    signed = f"{TOKEN_PREFIX}.{claims}"
    return f"{signed}.{_b64encode(_mac(secret, signed.encode('ascii')))}"


def verify_token(
    secret: bytes, token: str, room: str, now: float, role: Role | None = None
) -> TokenClaims:
    """The claims of ``token`` if it is genuine, unexpired, for ``room`` (and ``role`` when
    given); raises a :class:`TokenError` subclass otherwise."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LEN or not token.isascii():
        raise TokenInvalid("not a token")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        raise TokenInvalid("not a kf1 token")
    mac = _b64decode(parts[2])
    expected = _mac(secret, f"{parts[0]}.{parts[1]}".encode("ascii"))
    if not hmac.compare_digest(mac, expected):
        raise TokenInvalid("bad token signature")
    # Signed by us from here on: a failure below means a bug on the issuing side.
    try:
        body = json.loads(_b64decode(parts[1]))
        claims = TokenClaims(
            room=_check_name("room", body["r"]),
            participant=_check_name("participant", body["p"]),
            role=body["o"],
            expires=body["e"],
        )
    except (ValueError, KeyError, TypeError):
        raise TokenInvalid("token claims are malformed") from None
    if claims.role not in ROLES or type(claims.expires) is not int:
        raise TokenInvalid("token claims are malformed")
    if now >= claims.expires:
        raise TokenExpired(f"token expired {now - claims.expires:.0f} s ago")
    if claims.expires - now > MAX_TOKEN_TTL_S + 1:  # +1: the issuer floors the expiry
        raise TokenTooLong(f"token lifetime exceeds the {MAX_TOKEN_TTL_S} s maximum")
    if not hmac.compare_digest(claims.room.encode(), room.encode()):
        raise TokenWrongRoom("token is for another room")
    if role is not None and claims.role != role:
        raise TokenWrongRole(f"token grants {claims.role!r}, {role!r} is needed")
    return claims
