"""JWT tokens (HS256, RFC 7519): user and server tokens for the API, SFU tokens for media.

``iss`` names the API key whose secret signed the token, so several key pairs can be live at
once (rotation). ``exp`` is always required. SFU tokens carry ``typ: "sfu"`` and are refused by
the API; API tokens are refused by the SFU.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import jwt

from stagecast.settings import ApiKey, Settings

ALGORITHM = "HS256"
SFU_TOKEN_TYPE = "sfu"
# The API's user ids and call cids (docs/api.md): anything else in a token is refused.
USER_ID = re.compile(r"[a-zA-Z0-9@_.-]{1,128}")
CALL_CID = re.compile(r"[a-zA-Z0-9_-]{1,64}:[a-zA-Z0-9_-]{1,64}")


class TokenError(Exception):
    """A token that cannot be accepted. ``code`` is the API error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Principal:
    """Who an API token speaks for."""

    user_id: str
    is_server: bool = False
    app_role: str = "user"  # "user" or "admin"
    call_cids: frozenset[str] | None = None  # None: every call

    def may_access(self, cid: str) -> bool:
        return self.call_cids is None or cid in self.call_cids


@dataclass(frozen=True, slots=True)
class SfuGrant:
    """What an SFU token allows: one participant session in one call."""

    cid: str
    user_id: str
    session_id: str  # the call's live session
    participant_id: str  # this connection
    role: str
    capabilities: frozenset[str]
    name: str = ""
    hidden: bool = False  # egress and other server-side subscribers: not counted
    backstage_allowed: bool = False  # may receive media while the call is in backstage
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def can_send_audio(self) -> bool:
        return "send-audio" in self.capabilities

    @property
    def can_send_video(self) -> bool:
        return "send-video" in self.capabilities


class KeyRing:
    """The API key pairs; the first one signs, all of them verify."""

    def __init__(self, keys: list[ApiKey]) -> None:
        if not keys:
            raise ValueError("at least one API key pair is required")
        self._keys = list(keys)
        self._by_key = {pair.key: pair for pair in keys}

    @property
    def signing_key(self) -> ApiKey:
        return self._keys[0]

    def sign(self, claims: dict[str, Any], ttl_seconds: float) -> str:
        now = int(time.time())
        payload = {"iss": self.signing_key.key, "iat": now, "exp": now + int(ttl_seconds)}
        payload.update(claims)
        return jwt.encode(payload, self.signing_key.secret, algorithm=ALGORITHM)

    def decode(self, token: str) -> dict[str, Any]:
        """Verify signature, ``iss`` and ``exp``; return the claims."""
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("unauthenticated", "The token is not a valid JWT.") from None
        if header.get("alg") != ALGORITHM:
            raise TokenError("unauthenticated", "Tokens must be signed with HS256.")
        pair = self._by_key.get(str(unverified.get("iss", "")))
        if pair is None:
            raise TokenError("unauthenticated", "The token's issuer is not a known API key.")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                pair.secret,
                algorithms=[ALGORITHM],
                options={"require": ["exp", "iss"]},
                issuer=pair.key,
                leeway=5,
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token_expired", "The token has expired.") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError("unauthenticated", f"The token has no '{exc.claim}' claim.") from None
        except jwt.PyJWTError:
            raise TokenError("unauthenticated", "The token's signature is not valid.") from None
        return claims

    # API tokens

    def user_token(
        self,
        user_id: str,
        ttl_seconds: float = 3600,
        call_cids: list[str] | None = None,
        role: str | None = None,
    ) -> str:
        claims: dict[str, Any] = {"sub": user_id}
        if call_cids is not None:
            claims["call_cids"] = list(call_cids)
        if role is not None:
            claims["role"] = role
        return self.sign(claims, ttl_seconds)

    def server_token(self, ttl_seconds: float = 3600) -> str:
        return self.sign({"sub": "server", "server": True}, ttl_seconds)

    def principal(self, token: str) -> Principal:
        claims = self.decode(token)
        if claims.get("typ") == SFU_TOKEN_TYPE:
            raise TokenError("unauthenticated", "SFU tokens are not accepted by the API.")
        if claims.get("server") is True:
            return Principal(user_id="server", is_server=True, app_role="admin")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise TokenError("unauthenticated", "The token has no 'sub' claim.")
        if not USER_ID.fullmatch(subject):
            raise TokenError("unauthenticated", "The token's 'sub' is not a valid user id.")
        cids = claims.get("call_cids")
        if cids is not None and not (
            isinstance(cids, list)
            and all(isinstance(cid, str) and CALL_CID.fullmatch(cid) for cid in cids)
        ):
            raise TokenError("unauthenticated", "'call_cids' must be a list of call cids.")
        role = claims.get("role", "user")
        if role not in ("user", "admin"):
            raise TokenError("unauthenticated", "'role' must be 'user' or 'admin'.")
        return Principal(
            user_id=subject,
            app_role=role,
            call_cids=None if cids is None else frozenset(cids),
        )

    # SFU tokens

    def sfu_token(self, grant: SfuGrant, ttl_seconds: float) -> str:
        return self.sign(
            {
                "typ": SFU_TOKEN_TYPE,
                "sub": grant.user_id,
                "cid": grant.cid,
                "sid": grant.session_id,
                "pid": grant.participant_id,
                "role": grant.role,
                "caps": sorted(grant.capabilities),
                "name": grant.name,
                "hidden": grant.hidden,
                "backstage": grant.backstage_allowed,
                "extra": grant.extra,
            },
            ttl_seconds,
        )

    def sfu_grant(self, token: str) -> SfuGrant:
        claims = self.decode(token)
        if claims.get("typ") != SFU_TOKEN_TYPE:
            raise TokenError("unauthenticated", "This is not an SFU token.")
        try:
            return SfuGrant(
                cid=str(claims["cid"]),
                user_id=str(claims["sub"]),
                session_id=str(claims["sid"]),
                participant_id=str(claims["pid"]),
                role=str(claims["role"]),
                capabilities=frozenset(str(cap) for cap in claims["caps"]),
                name=str(claims.get("name", "")),
                hidden=bool(claims.get("hidden", False)),
                backstage_allowed=bool(claims.get("backstage", False)),
                extra=dict(claims.get("extra") or {}),
            )
        except (KeyError, TypeError, ValueError):
            raise TokenError("unauthenticated", "The SFU token lacks required claims.") from None


def load_api_keys(settings: Settings) -> list[ApiKey]:
    """The configured key pairs; in dev mode without any, a generated pair kept in the data dir."""
    configured = settings.configured_api_keys()
    if configured:
        return configured
    if not settings.dev_mode:
        raise ValueError(
            "no API key configured: set STAGECAST_API_KEY and STAGECAST_API_SECRET "
            "(or STAGECAST_API_KEYS), or enable STAGECAST_DEV_MODE"
        )
    path = settings.data_dir / "dev-api-key.json"
    if path.exists():
        stored = json.loads(path.read_text())
        return [ApiKey(stored["key"], stored["secret"])]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    pair = ApiKey("dev-" + secrets.token_hex(6), secrets.token_urlsafe(32))
    # Created private: never readable by others, not even until a chmod.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(json.dumps({"key": pair.key, "secret": pair.secret}))
    return [pair]
