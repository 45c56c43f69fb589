"""``stagecast loadtest`` against the embedded server: a clean short run, a bad secret, the
JSON report against its documented schema, the safety limit, Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from stagecast.loadtest.report import percentiles
from stagecast.loadtest.runner import Config, UsageError, is_loopback, validate
from stagecast.loadtest.schema import SCHEMA, dump
from tests.loadtest.conftest import Server

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "docs" / "loadtest.schema.json"

pytestmark = pytest.mark.timeout(120)


async def loadtest(*args: str, interrupt_after: float | None = None) -> tuple[int, str, str]:
    """Run ``stagecast loadtest`` in a subprocess (this process keeps serving)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stagecast.cli", "loadtest", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    if interrupt_after is not None:
        await asyncio.sleep(interrupt_after)
        process.send_signal(signal.SIGINT)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 100)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def credentials(server: Server, secret: str | None = None) -> list[str]:
    return ["--url", server.url, "--api-key", server.api_key,
            "--api-secret", secret or server.api_secret]  # fmt: skip


def validated(stdout: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(stdout)
    jsonschema.validate(report, json.loads(SCHEMA_FILE.read_text()))
    return report


async def test_twenty_viewers_ten_seconds(server: Server) -> None:
    code, stdout, stderr = await loadtest(
        *credentials(server), "--publish", "--bitrate", "600k", "--viewers", "20",
        "--ramp", "10", "--duration", "10", "--workers", "2", "--json",
    )  # fmt: skip
    assert code == 0, stderr
    report = validated(stdout)
    total = report["phases"]["total"]
    steady = report["phases"]["steady"]
    assert total["viewers"]["connected"] == 20, stderr
    assert total["viewers"]["receiving"] == 20, stderr
    assert report["errors"] == {} and report["setup_errors"] == []
    assert total["packets"]["video_packets"] > 0
    # no loss once everyone is in; the joins' keyframe bursts may cost a little on a
    # loaded machine (docs/loadtest.md)
    assert steady["loss_percent"]["total"] == 0.0, steady
    assert total["loss_percent"]["total"] < 0.5, total
    publisher = steady["bitrate_kbps"]["publisher"]
    per_viewer = steady["bitrate_kbps"]["per_viewer"]
    assert publisher > 300, steady
    assert abs(per_viewer - publisher) / publisher < 0.25, steady["bitrate_kbps"]
    assert total["first_frame_ms"]["count"] == 20
    assert total["first_frame_ms"]["p95"] is not None
    assert total["latency_ms"]["count"] > 10
    assert 0 < total["latency_ms"]["p50"] < 1000
    # the live progress went to stderr, the summary table too (stdout is the JSON)
    assert "connected 20/20" in stderr
    assert "steady" in stderr and "total" in stderr


async def test_bad_secret_reports_errors_by_code(server: Server) -> None:
    code, stdout, stderr = await loadtest(
        *credentials(server, secret="not-the-secret-0123456789abcdef-0123456789"),
        "--publish", "--viewers", "4", "--ramp", "20", "--duration", "3", "--workers", "1",
        "--json",
    )  # fmt: skip
    assert code == 1, stderr
    report = validated(stdout)
    assert report["errors"] == {"unauthenticated": 4}
    assert report["setup_errors"][0]["step"] == "create_call"
    assert report["setup_errors"][0]["code"] == "unauthenticated"
    assert report["phases"]["total"]["viewers"]["connected"] == 0
    assert "unauthenticated: 4" in stderr  # the summary names them


async def test_sigint_stops_cleanly_and_still_reports(server: Server, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    code, stdout, stderr = await loadtest(
        *credentials(server), "--publish", "--viewers", "3", "--ramp", "10",
        "--duration", "60", "--workers", "2", "--log-dir", str(logs),
        interrupt_after=8,
    )  # fmt: skip
    assert code == 130, stderr
    assert "(interrupted)" in stdout
    assert "total" in stdout
    # every worker process is gone
    pids = [int(line.split()[-1]) for line in stderr.splitlines() if "worker pid" in line]
    assert len(pids) == 3, stderr
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_documented_schema_is_the_code_schema() -> None:
    assert SCHEMA_FILE.read_text() == dump()
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_remote_target_needs_consent_above_fifty() -> None:
    remote = Config(url="http://192.0.2.10:8080", viewers=51, api_key="k", api_secret="s")
    with pytest.raises(UsageError, match="--i-own-this-server"):
        validate(remote)
    validate(Config(url="http://192.0.2.10:8080", viewers=50, api_key="k", api_secret="s"))
    remote.i_own_this_server = True
    validate(remote)
    validate(Config(url="http://127.0.0.1:8080", viewers=500, api_key="k", api_secret="s"))
    assert is_loopback("http://localhost:8080") and not is_loopback("http://192.0.2.10")


async def test_refusal_is_a_clear_message_and_exit_2() -> None:
    code, _, stderr = await loadtest(
        "--url", "http://192.0.2.10:8080", "--api-key", "k", "--api-secret", "s",
        "--viewers", "100",
    )  # fmt: skip
    assert code == 2
    assert "--i-own-this-server" in stderr and "not on this machine" in stderr


def test_percentiles() -> None:
    assert percentiles([]) == {"count": 0, "p50": None, "p95": None, "max": None}
    values = [float(v) for v in range(1, 101)]
    assert percentiles(values) == {"count": 100, "p50": 50.0, "p95": 95.0, "max": 100.0}


async def test_token_file(server: Server, tmp_path: Path) -> None:
    """The first token creates the call (its user becomes host), goes live and publishes;
    the viewers take the others in turn."""
    from stagecast.settings import ApiKey
    from stagecast.tokens import KeyRing

    keyring = KeyRing([ApiKey(server.api_key, server.api_secret)])
    tokens = tmp_path / "tokens"
    tokens.write_text(
        "# host first\n"
        + "\n".join(
            [keyring.user_token("filehost"), *(keyring.user_token(f"v{i}") for i in range(2))]
        )
        + "\n"
    )
    code, stdout, stderr = await loadtest(
        "--url", server.url, "--token-file", str(tokens), "--call", "livestream:from-file",
        "--publish", "--viewers", "3", "--ramp", "10", "--duration", "4", "--json",
    )  # fmt: skip
    assert code == 0, stderr
    report = validated(stdout)
    assert report["target"]["call_cid"] == "livestream:from-file"
    assert report["phases"]["total"]["viewers"]["connected"] == 3
    assert report["phases"]["total"]["packets"]["video_packets"] > 0


async def test_sigint_during_setup(server: Server) -> None:
    """Interrupted before the viewers start: still a summary, no worker left behind."""
    code, stdout, stderr = await loadtest(
        *credentials(server), "--publish", "--viewers", "3", "--duration", "60", "--json",
        interrupt_after=1.0,
    )  # fmt: skip
    assert code == 130, stderr
    report = validated(stdout)
    assert report["interrupted"] is True
    assert "(interrupted)" in stderr
    for line in stderr.splitlines():
        if "worker pid" in line:
            with pytest.raises(ProcessLookupError):
                os.kill(int(line.split()[-1]), 0)


async def test_h264_publisher(server: Server) -> None:
    code, stdout, stderr = await loadtest(
        *credentials(server), "--publish", "--codec", "h264", "--viewers", "3",
        "--duration", "5", "--json",
    )  # fmt: skip
    assert code == 0, stderr
    total = validated(stdout)["phases"]["total"]
    assert total["viewers"]["connected"] == 3
    assert total["packets"]["video_packets"] > 0
    assert total["latency_ms"]["count"] > 0


async def test_file_source(server: Server, tmp_path: Path) -> None:
    """A media file instead of the synthetic source: media flows, no latency is claimed."""
    import shutil

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    media = tmp_path / "clip.webm"
    ffmpeg = await asyncio.create_subprocess_exec(
        "ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
        "-t", "3", "-c:v", "libvpx", "-b:v", "300k", str(media),
    )  # fmt: skip
    assert await ffmpeg.wait() == 0
    code, stdout, stderr = await loadtest(
        *credentials(server), "--file", str(media), "--viewers", "2", "--duration", "4",
        "--json",
    )  # fmt: skip
    assert code == 0, stderr
    report = validated(stdout)
    assert report["config"]["publish"]["file"] == str(media)
    total = report["phases"]["total"]
    assert total["viewers"]["connected"] == 2
    assert total["packets"]["video_packets"] > 0
    assert total["latency_ms"]["count"] == 0
