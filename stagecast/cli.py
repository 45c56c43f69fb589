"""The ``stagecast`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from stagecast.logs import configure_logging
from stagecast.settings import Settings


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    flags = {
        key: value
        for key, value in vars(args).items()
        if key in Settings.model_fields and value is not None
    }
    flags.update(overrides)
    return Settings(**flags)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from stagecast.embedded import create_embedded_app
    from stagecast.tokens import KeyRing, load_api_keys

    settings = _settings(args, dev_mode=True if args.dev_mode is None else args.dev_mode)
    configure_logging(settings.log_format, settings.log_level)
    keyring = KeyRing(load_api_keys(settings))
    app = create_embedded_app(settings)
    print(f"Stagecast is running at {settings.base_url}", flush=True)
    print(f"  API key: {keyring.signing_key.key}", flush=True)
    if settings.dev_mode:
        print(
            f"  dev mode: API secret kept in {settings.data_dir / 'dev-api-key.json'}; "
            "demo users log in without a secret",
            flush=True,
        )
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False)
    return 0


def _coordinator(args: argparse.Namespace) -> int:
    import uvicorn

    from server.app import create_app

    settings = _settings(args)
    configure_logging(settings.log_format, settings.log_level)
    app = create_app(settings, migrate=False)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False)
    return 0


def _sfu(args: argparse.Namespace) -> int:
    from sfu.node import run_sfu
    from stagecast.bus import create_bus
    from stagecast.embedded import create_node
    from stagecast.tokens import KeyRing, load_api_keys

    settings = _settings(args)
    configure_logging(settings.log_format, settings.log_level)
    if not settings.redis_url:
        raise ValueError("an SFU node in its own process needs STAGECAST_REDIS_URL (the bus)")
    node = create_node(
        settings,
        create_bus(settings.redis_url),
        KeyRing(load_api_keys(settings)),
        settings.base_url,
    )
    # Drains on SIGTERM: clients get `goaway` before their WebSockets close.
    run_sfu(node, settings.host, settings.port, log_config=None, access_log=False)
    return 0


def _ingest(args: argparse.Namespace) -> int:
    import uvicorn

    from ingest import IngestService
    from ingest.http import create_ingest_app
    from stagecast.embedded import configure_media_addresses
    from stagecast.tokens import KeyRing, load_api_keys

    settings = _settings(args)
    configure_logging(settings.log_format, settings.log_level)
    configure_media_addresses(settings)
    keyring = KeyRing(load_api_keys(settings))
    # Publishers join through the coordinator at STAGECAST_PUBLIC_URL (or --public-url);
    # /healthz, /readyz and /metrics are served on --host/--port.
    service = IngestService(
        settings.base_url, keyring, host=args.rtmp_host, port=settings.rtmp_port
    )
    app = create_ingest_app(service)
    uvicorn.run(app, host=settings.host, port=args.http_port, log_config=None, access_log=False)
    return 0


def _egress(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from egress.storage import default_storage
    from egress.worker import EgressWorker
    from stagecast.bus import create_bus

    settings = _settings(args)
    configure_logging(settings.log_format, settings.log_level)
    if not settings.redis_url:
        raise ValueError("an egress worker in its own process needs STAGECAST_REDIS_URL (the bus)")

    async def run() -> None:
        bus = create_bus(settings.redis_url)
        worker = EgressWorker(bus, default_storage(settings.data_dir), max_jobs=args.max_jobs)
        task = asyncio.create_task(worker.run())
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass
        finally:
            await bus.close()

    print(f"egress worker: files in {settings.data_dir / 'egress'}", flush=True)
    asyncio.run(run())
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from server.db import upgrade

    settings = _settings(args)
    configure_logging(settings.log_format, settings.log_level)
    try:
        upgrade(settings.effective_database_url)
    except (OSError, SQLAlchemyError) as exc:
        # The URL may hold a password: name the problem, not the URL.
        print(f"stagecast: cannot upgrade the database: {type(exc).__name__}", file=sys.stderr)
        return 1
    print("database is up to date")
    return 0


def _token_create(args: argparse.Namespace) -> int:
    from stagecast.tokens import KeyRing, load_api_keys

    settings = _settings(args)
    keyring = KeyRing(load_api_keys(settings))
    if args.server:
        print(keyring.server_token(ttl_seconds=args.ttl))
    else:
        if not args.user:
            print("token create: give --user ID or --server", file=sys.stderr)
            return 2
        print(
            keyring.user_token(
                args.user, ttl_seconds=args.ttl, call_cids=args.call or None, role=args.role
            )
        )
    return 0


def _add_loadtest(commands: Any) -> None:
    """``stagecast loadtest`` (``stagecast/loadtest/``, ``docs/loadtest.md``)."""
    from stagecast.loadtest.runner import add_arguments

    def run(args: argparse.Namespace) -> int:
        from stagecast.loadtest.runner import main as loadtest_main

        return loadtest_main(args)

    loadtest = commands.add_parser(
        "loadtest", help="synthetic viewers (and a publisher) against a running Stagecast"
    )
    add_arguments(loadtest)
    loadtest.set_defaults(run=run)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", dest="data_dir", help="where embedded state is kept")
    parser.add_argument("--database-url", dest="database_url")
    parser.add_argument("--redis-url", dest="redis_url")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stagecast", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="every role in one process (embedded defaults)")
    coordinator = commands.add_parser("coordinator", help="the API coordinator only")
    sfu = commands.add_parser("sfu", help="one SFU media node (needs the Redis bus)")
    for sub in (serve, coordinator, sfu):
        _common(sub)
        sub.add_argument("--host")
        sub.add_argument("--port", type=int)
        sub.add_argument("--public-url", dest="public_url")
    serve.add_argument(
        "--dev-mode", dest="dev_mode", action=argparse.BooleanOptionalAction, default=None
    )
    serve.set_defaults(run=_serve)
    coordinator.set_defaults(run=_coordinator)
    sfu.set_defaults(run=_sfu)

    ingest = commands.add_parser(
        "ingest", help="the RTMP ingest: publishers join calls through the coordinator"
    )
    _common(ingest)
    ingest.add_argument("--rtmp-host", dest="rtmp_host", default="0.0.0.0")
    ingest.add_argument(
        "--rtmp-port", dest="rtmp_port", type=int, help="default STAGECAST_RTMP_PORT or 1935"
    )
    ingest.add_argument("--public-url", dest="public_url", help="the coordinator's URL")
    ingest.add_argument("--host", help="HTTP (health, metrics) address")
    ingest.add_argument(
        "--port", dest="http_port", type=int, default=8090, help="HTTP port (default 8090)"
    )
    ingest.set_defaults(run=_ingest)

    egress = commands.add_parser("egress", help="an egress worker: HLS and recordings (Redis bus)")
    _common(egress)
    egress.add_argument("--max-jobs", dest="max_jobs", type=int, default=4)
    egress.set_defaults(run=_egress)

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_upgrade = db_commands.add_parser("upgrade", help="apply every migration")
    _common(db_upgrade)
    db_upgrade.set_defaults(run=_db_upgrade)

    token = commands.add_parser("token", help="tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser("create", help="print a signed token")
    _common(create)
    create.add_argument("--user", help="user id (the token's sub)")
    create.add_argument("--server", action="store_true", help="a server token (full access)")
    create.add_argument("--ttl", type=int, default=3600, help="seconds (default 3600)")
    create.add_argument(
        "--call", action="append", help="limit to this call cid (repeatable)", default=[]
    )
    create.add_argument("--role", choices=["user", "admin"])
    create.set_defaults(run=_token_create)
    _add_loadtest(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ValueError as exc:  # configuration errors: say what to fix, no traceback
        print(f"stagecast: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
