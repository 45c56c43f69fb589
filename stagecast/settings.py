"""The one typed settings object, read from ``STAGECAST_*`` environment variables.

Command-line flags override the environment by passing keyword arguments to
``Settings(...)``; nothing else in the code base reads the environment.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIN_SECRET_BYTES = 32


class ApiKey:
    """One API key / secret pair. The secret signs and verifies HS256 tokens."""

    __slots__ = ("key", "secret")

    def __init__(self, key: str, secret: str) -> None:
        if not key or not secret:
            raise ValueError("an API key and its secret must both be non-empty")
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"the secret of API key {key!r} is too short: HS256 needs at least "
                f"{MIN_SECRET_BYTES} bytes"
            )
        self.key = key
        self.secret = secret

    def __repr__(self) -> str:  # never print the secret
        return f"ApiKey(key={self.key!r}, secret=***)"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STAGECAST_", extra="ignore")

    # Where the embedded defaults keep their files (SQLite database, dev keys, media).
    data_dir: Path = Path("./data")
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_url: str | None = None
    dev_mode: bool = False

    api_key: str | None = None
    api_secret: SecretStr | None = None
    # "key1:secret1,key2:secret2" for rotation; the first pair signs new tokens.
    api_keys: Annotated[SecretStr | None, NoDecode] = None

    database_url: str | None = None
    redis_url: str | None = None

    # Lifetime of the SFU tokens that join hands out.
    sfu_token_ttl_seconds: int = Field(600, ge=10, le=86400)
    # Webhook endpoints that receive every event, comma-separated.
    webhook_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    webhook_max_attempts: int = Field(6, ge=1, le=20)

    # One SFU node.
    node_id: str = Field(default_factory=lambda: "sfu-" + secrets.token_hex(4))
    region: str = ""
    sfu_capacity: int = Field(250, ge=1)
    sfu_udp_port_min: int = Field(0, ge=0, le=65535)
    sfu_udp_port_max: int = Field(0, ge=0, le=65535)
    sfu_announced_address: str | None = None
    node_heartbeat_seconds: float = Field(2.0, gt=0)
    node_ttl_seconds: float = Field(6.0, gt=0)

    rtmp_port: int = Field(1935, ge=0, le=65535)

    log_format: str = Field("console", pattern="^(console|json)$")
    log_level: str = "INFO"

    @field_validator("webhook_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return [url.strip() for url in value.split(",") if url.strip()]
        return value

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'stagecast.db').resolve()}"

    @property
    def base_url(self) -> str:
        """The URL clients reach the coordinator at."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://{self.host}:{self.port}"

    def configured_api_keys(self) -> list[ApiKey]:
        """The API key pairs from the environment, the signing pair first."""
        pairs: list[ApiKey] = []
        if self.api_key and self.api_secret:
            pairs.append(ApiKey(self.api_key, self.api_secret.get_secret_value()))
        if self.api_keys:
            for item in self.api_keys.get_secret_value().split(","):
                item = item.strip()
                if not item:
                    continue
                key, sep, secret = item.partition(":")
                if not sep:
                    raise ValueError("STAGECAST_API_KEYS entries must look like key:secret")
                pairs.append(ApiKey(key.strip(), secret.strip()))
        return pairs
