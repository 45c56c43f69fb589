"""Unit tests for stagecast.tokens: the key ring, API principals, SFU grants and API keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from stagecast.settings import MIN_SECRET_BYTES, ApiKey, Settings
from stagecast.tokens import (
    ALGORITHM,
    SFU_TOKEN_TYPE,
    KeyRing,
    Principal,
    SfuGrant,
    TokenError,
    load_api_keys,
)

FIRST = ApiKey("key-one", "s" * MIN_SECRET_BYTES)
SECOND = ApiKey("key-two", "t" * 40)
STRANGER = ApiKey("key-three", "u" * 40)


def raw_token(claims: dict[str, Any], secret: str = FIRST.secret, **kwargs: Any) -> str:
    """A token with exactly ``claims`` (no defaults added)."""
    return jwt.encode(claims, secret, algorithm=kwargs.pop("algorithm", ALGORITHM), **kwargs)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def hand_signed(payload: Any, secret: str = FIRST.secret, header: Any = None) -> str:
    """An HS256 token built by hand, for claims PyJWT refuses to encode."""
    signing_input = (
        b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
        + "."
        + b64(json.dumps(payload).encode())
    )
    mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def claims(**extra: Any) -> dict[str, Any]:
    return {"iss": FIRST.key, "sub": "alice", "exp": int(time.time()) + 600, **extra}


def refused(ring: KeyRing, token: str, code: str = "unauthenticated") -> TokenError:
    with pytest.raises(TokenError) as caught:
        ring.principal(token)
    assert caught.value.code == code, caught.value.message
    assert caught.value.message
    return caught.value


# The key ring and rotation


def test_the_first_key_signs_and_every_key_verifies() -> None:
    ring = KeyRing([FIRST, SECOND])
    assert ring.signing_key is FIRST
    assert jwt.get_unverified_header(ring.user_token("alice"))["alg"] == "HS256"
    assert ring.decode(ring.user_token("alice"))["iss"] == FIRST.key
    # A token signed with the second pair (e.g. by a service not yet rotated) still verifies.
    by_second = KeyRing([SECOND]).user_token("bob")
    assert ring.principal(by_second) == Principal(user_id="bob")
    # Once the first key is retired, its tokens no longer verify; the second's still do.
    retired = KeyRing([SECOND])
    refused(retired, ring.user_token("alice"))
    assert retired.principal(by_second).user_id == "bob"


def test_an_empty_key_ring_is_refused() -> None:
    with pytest.raises(ValueError):
        KeyRing([])


def test_sign_sets_issuer_issued_at_and_expiry() -> None:
    ring = KeyRing([FIRST])
    before = int(time.time())
    decoded = ring.decode(ring.sign({"sub": "alice"}, 120))
    assert decoded["iss"] == FIRST.key and decoded["sub"] == "alice"
    assert before <= decoded["iat"] <= before + 2
    assert decoded["exp"] == decoded["iat"] + 120


@pytest.mark.parametrize(
    ("name", "token"),
    [
        ("unknown iss", raw_token(claims(iss=STRANGER.key), STRANGER.secret)),
        ("no iss", raw_token({k: v for k, v in claims().items() if k != "iss"})),
        ("non-string iss", hand_signed(claims(iss=["key-one"]))),
        ("wrong secret for a known iss", raw_token(claims(), SECOND.secret)),
        ("no exp", raw_token({k: v for k, v in claims().items() if k != "exp"})),
        ("non-numeric exp", hand_signed(claims(exp="tomorrow"))),
        ("alg none", raw_token(claims(), "", algorithm="none")),
        ("alg HS512", hand_signed(claims(), header={"alg": "HS512", "typ": "JWT"})),
        ("issued in the future", raw_token(claims(iat=int(time.time()) + 3600))),
        ("not yet valid", raw_token(claims(nbf=int(time.time()) + 3600))),
        ("garbage", "not-a-jwt"),
        ("empty", ""),
        ("three garbage parts", "a.b.c"),
        ("header that is not an object", hand_signed(claims(), header=[1])),
        ("payload that is not an object", hand_signed(["alice"])),
        ("typ sfu on the api", hand_signed(claims(typ="sfu"))),
    ],
)
def test_tokens_that_do_not_verify_are_unauthenticated(name: str, token: str) -> None:
    refused(KeyRing([FIRST, SECOND]), token)


def test_a_tampered_payload_or_signature_is_unauthenticated() -> None:
    ring = KeyRing([FIRST])
    header, payload, signature = ring.user_token("alice").split(".")
    forged_claims = {**ring.decode(ring.user_token("alice")), "sub": "server", "server": True}
    forged = b64(json.dumps(forged_claims).encode())
    refused(ring, f"{header}.{forged}.{signature}")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    refused(ring, f"{header}.{payload}.{flipped}")
    refused(ring, f"{header}.{payload}.")


def test_expired_tokens_are_token_expired_after_the_leeway() -> None:
    ring = KeyRing([FIRST])
    refused(ring, raw_token(claims(exp=int(time.time()) - 60)), "token_expired")
    # A few seconds of clock skew are tolerated.
    assert ring.principal(raw_token(claims(exp=int(time.time()) - 1))).user_id == "alice"
    # A bad signature wins over expiry: nothing about an unverified token is believed.
    refused(ring, raw_token(claims(exp=int(time.time()) - 60), SECOND.secret))


# API principals


def test_user_server_and_admin_principals() -> None:
    ring = KeyRing([FIRST])
    assert ring.principal(ring.user_token("alice")) == Principal(user_id="alice")
    admin = ring.principal(ring.user_token("root", role="admin"))
    assert admin.app_role == "admin" and not admin.is_server
    server = ring.principal(ring.server_token())
    assert server.is_server and server.app_role == "admin" and server.call_cids is None
    # "server" as a subject alone is just a user called server.
    assert not ring.principal(raw_token(claims(sub="server"))).is_server
    assert not ring.principal(raw_token(claims(server="true"))).is_server


def test_call_cids_scope_a_token() -> None:
    ring = KeyRing([FIRST])
    scoped = ring.principal(ring.user_token("alice", call_cids=["livestream:a"]))
    assert scoped.call_cids == frozenset({"livestream:a"})
    assert scoped.may_access("livestream:a") and not scoped.may_access("livestream:b")
    longest = ["t" * 64 + ":" + "i" * 64, "default:a_b-C9"]
    assert ring.principal(ring.user_token("a@b.c_d-1", call_cids=longest)).call_cids == set(longest)
    assert ring.principal(ring.user_token("u" * 128)).user_id == "u" * 128
    nowhere = ring.principal(ring.user_token("alice", call_cids=[]))
    assert not nowhere.may_access("livestream:a")
    assert ring.principal(ring.user_token("alice")).may_access("anything:at-all")


@pytest.mark.parametrize(
    "bad",
    [
        {"sub": None},
        {"sub": ""},
        {"sub": 42},
        {"sub": ["alice"]},
        {"sub": "u" * 129},
        {"sub": "has space"},
        {"sub": "nul\x00"},
        {"sub": "alice\n"},
        {"sub": "ünïcode"},
        {"call_cids": ["livestream:a\x00"]},
        {"call_cids": ["no-colon"]},
        {"call_cids": ["livestream:" + "x" * 65]},
        {"call_cids": "livestream:a"},
        {"call_cids": [1, 2]},
        {"call_cids": {"livestream:a": True}},
        {"role": "superuser"},
        {"role": None},
        {"role": ["admin"]},
    ],
    ids=repr,
)
def test_principal_claims_are_validated(bad: dict[str, Any]) -> None:
    refused(KeyRing([FIRST]), raw_token(claims(**bad)))


def test_sfu_tokens_are_refused_by_the_api_and_api_tokens_by_the_sfu() -> None:
    ring = KeyRing([FIRST])
    sfu = ring.sfu_token(SfuGrant("livestream:a", "alice", "s1", "p1", "user", frozenset()), 60)
    refused(ring, sfu)
    for api_token in (ring.user_token("alice"), ring.server_token()):
        with pytest.raises(TokenError) as caught:
            ring.sfu_grant(api_token)
        assert caught.value.code == "unauthenticated"


# SFU grants


def test_sfu_grant_round_trip() -> None:
    ring = KeyRing([FIRST, SECOND])
    grant = SfuGrant(
        cid="livestream:show",
        user_id="alice",
        session_id="sess-1",
        participant_id="part-1",
        role="host",
        capabilities=frozenset({"send-audio", "send-video", "join-backstage"}),
        name="Alice",
        hidden=True,
        backstage_allowed=True,
        extra={"node": "sfu-1", "n": 3},
    )
    token = ring.sfu_token(grant, 30)
    decoded = ring.decode(token)
    assert decoded["typ"] == SFU_TOKEN_TYPE and decoded["exp"] - decoded["iat"] == 30
    assert ring.sfu_grant(token) == grant
    assert grant.can_send_audio and grant.can_send_video
    # Verified by another coordinator that holds the same pair, in another position.
    assert KeyRing([SECOND, FIRST]).sfu_grant(token) == grant

    viewer = SfuGrant(
        "livestream:show", "bob", "sess-1", "part-2", "user", frozenset({"join-call"})
    )
    back = ring.sfu_grant(ring.sfu_token(viewer, 30))
    assert back == viewer and not back.can_send_audio and not back.can_send_video
    assert not back.backstage_allowed and not back.hidden and back.extra == {}


def test_sfu_tokens_without_their_claims_or_expired_are_refused() -> None:
    ring = KeyRing([FIRST])
    incomplete = raw_token(claims(typ=SFU_TOKEN_TYPE, cid="livestream:a"))
    with pytest.raises(TokenError) as caught:
        ring.sfu_grant(incomplete)
    assert caught.value.code == "unauthenticated"
    grant = SfuGrant("livestream:a", "alice", "s1", "p1", "user", frozenset())
    with pytest.raises(TokenError) as caught:
        ring.sfu_grant(ring.sfu_token(grant, -60))
    assert caught.value.code == "token_expired"


# API keys


def test_short_or_empty_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="too short"):
        ApiKey("key", "x" * (MIN_SECRET_BYTES - 1))
    with pytest.raises(ValueError):
        ApiKey("", "x" * MIN_SECRET_BYTES)
    with pytest.raises(ValueError):
        ApiKey("key", "")
    assert ApiKey("key", "x" * MIN_SECRET_BYTES).secret == "x" * MIN_SECRET_BYTES
    assert "x" * 8 not in repr(ApiKey("key", "x" * MIN_SECRET_BYTES))


def test_short_configured_secrets_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="too short"):
        load_api_keys(Settings(data_dir=tmp_path, api_key="k", api_secret="short"))
    with pytest.raises(ValueError, match="too short"):
        load_api_keys(Settings(data_dir=tmp_path, api_keys=f"a:{'x' * 40},b:short"))


def test_configured_keys_come_first_and_in_order(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        dev_mode=True,
        api_key=FIRST.key,
        api_secret=FIRST.secret,
        api_keys=f" {SECOND.key}:{SECOND.secret} , ,{STRANGER.key}:{STRANGER.secret}",
    )
    keys = load_api_keys(settings)
    assert [(k.key, k.secret) for k in keys] == [
        (FIRST.key, FIRST.secret),
        (SECOND.key, SECOND.secret),
        (STRANGER.key, STRANGER.secret),
    ]
    assert not (tmp_path / "dev-api-key.json").exists()  # nothing generated
    with pytest.raises(ValueError, match="key:secret"):
        load_api_keys(Settings(data_dir=tmp_path, api_keys="no-colon-here"))


def test_without_keys_and_dev_mode_the_coordinator_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no API key configured"):
        load_api_keys(Settings(data_dir=tmp_path, dev_mode=False))
    assert list(tmp_path.iterdir()) == []


def test_dev_mode_generates_a_pair_once_and_keeps_it_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"  # created on demand
    settings = Settings(data_dir=data_dir, dev_mode=True)
    [generated] = load_api_keys(settings)
    assert generated.key.startswith("dev-") and len(generated.secret) >= MIN_SECRET_BYTES
    path = data_dir / "dev-api-key.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"key": generated.key, "secret": generated.secret}
    # The next start reuses it, so tokens minted before a restart stay valid.
    [again] = load_api_keys(Settings(data_dir=data_dir, dev_mode=True))
    assert (again.key, again.secret) == (generated.key, generated.secret)
    ring = KeyRing([generated])
    assert KeyRing([again]).principal(ring.user_token("alice")).user_id == "alice"


def test_the_dev_secret_is_never_readable_by_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not even between writing the file and restricting it: the mode is set at creation."""
    seen: list[int] = []
    real_chmod = Path.chmod

    def watching_chmod(self: Path, mode: int, **kwargs: Any) -> None:
        seen.append(stat.S_IMODE(self.stat().st_mode))
        real_chmod(self, mode, **kwargs)

    monkeypatch.setattr(Path, "chmod", watching_chmod)
    old_umask = os.umask(0o022)
    try:
        load_api_keys(Settings(data_dir=tmp_path, dev_mode=True))
    finally:
        os.umask(old_umask)
    path = tmp_path / "dev-api-key.json"
    assert all(mode & 0o077 == 0 for mode in seen), [oct(mode) for mode in seen]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
