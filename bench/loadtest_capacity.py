"""The largest viewer count this machine sustains, with ``stagecast loadtest``, and a plot of
the server's CPU against viewers.

Starts ``stagecast serve`` (coordinator + SFU in one process) on a free loopback port, then
for each N of the ladder runs ``stagecast loadtest --publish --viewers N`` (its own call)
with ``--duration`` = ramp + ``--steady`` seconds, while sampling the server's CPU
(``/proc/PID/stat``) once a second. A step *holds* when every viewer is connected and the
steady phase's loss is below ``--max-loss`` percent; the ladder stops at the first step that
does not. Prints a table, writes ``--json`` results and ``--plot`` (PNG, matplotlib).

    .venv/bin/python bench/loadtest_capacity.py --steps 50,100,150,200,250 --steady 60 \\
        --plot bench/loadtest_capacity.png --json bench/loadtest_capacity.json

The server's CPU is averaged over the steady window (from the end of the ramp + 5 s to the
end of the run - 2 s). Everything shares the machine: the load average of each step is
reported (other people's jobs show there).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KEY, SECRET = "capacity", "capacity-secret-0123456789abcdef-0123456789abcdef"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        STAGECAST_API_KEY=KEY,
        STAGECAST_API_SECRET=SECRET,
        STAGECAST_SFU_ANNOUNCED_ADDRESS="127.0.0.1",
        STAGECAST_LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "stagecast.cli", "serve", "--host", "127.0.0.1",
         "--port", str(port), "--data-dir", str(data_dir), "--public-url", url],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        start_new_session=True,
    )  # fmt: skip
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"stagecast serve exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                time.sleep(1)
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("stagecast serve never became ready")


def step(url: str, server_pid: int, n: int, args: argparse.Namespace) -> dict[str, Any]:
    ramp_s = n / args.ramp
    duration = ramp_s + args.steady
    command = [sys.executable, "-m", "stagecast.cli", "loadtest", "--url", url,
               "--api-key", KEY, "--api-secret", SECRET, "--publish", "--viewers", str(n),
               "--ramp", str(args.ramp), "--duration", str(duration),
               "--workers", str(args.workers), "--bitrate", args.bitrate, "--json",
               "--call", f"livestream:capacity-{n}-{int(time.time())}"]  # fmt: skip
    samples: list[tuple[float, float]] = []
    launched = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=None, cwd=ROOT)
    try:
        while process.poll() is None:
            samples.append((time.monotonic() - launched, cpu_seconds(server_pid)))
            time.sleep(1)
        stdout = process.stdout.read() if process.stdout else b""
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)
        process.wait()
        raise
    report = json.loads(stdout)
    # the steady window: the loadtest starts its workers (~3 s) and publisher (~2 s) first
    setup = 5.0
    lo, hi = setup + ramp_s + 5, setup + duration - 2
    window = [s for s in samples if lo <= s[0] <= hi] or samples
    cpu = (
        100 * (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])
        if len(window) > 1
        else 0.0
    )
    steady = report["phases"].get("steady") or report["phases"]["total"]
    return {
        "viewers": n,
        "connected": report["phases"]["total"]["viewers"]["connected"],
        "loss_percent": steady["loss_percent"]["total"],
        "loss_percent_video_audio": [
            steady["loss_percent"]["video"],
            steady["loss_percent"]["audio"],
        ],
        "worker_cpu_seconds": report["machine"]["worker_cpu_seconds"],
        "steady_s": steady["duration_s"],
        "per_viewer_kbps": steady["bitrate_kbps"]["per_viewer"],
        "publisher_kbps": steady["bitrate_kbps"]["publisher"],
        "aggregate_mbps": round(steady["bitrate_kbps"]["aggregate"] / 1000, 1),
        "first_frame_ms": report["phases"]["total"]["first_frame_ms"],
        "latency_ms": steady["latency_ms"],
        "server_cpu_percent": round(cpu, 1),
        "load_average": report["machine"]["load_average"],
        "errors": report["errors"],
    }


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs = [r["viewers"] for r in results]
    ax.plot(xs, [r["server_cpu_percent"] for r in results], "o-", label="server CPU (% of a core)")
    for r in results:
        if not r["held"]:
            ax.annotate(
                "loss ≥ limit",
                (r["viewers"], r["server_cpu_percent"]),
                fontsize=7,
                textcoords="offset points",
                xytext=(-20, 8),
            )
    ax.set_xlabel("viewers")
    ax.set_ylabel("stagecast serve CPU, % of one core")
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(xs, [r["loss_percent"] for r in results], "s--", color="tab:red", label="loss %")
    ax2.set_ylabel("loss %", color="tab:red")
    loads = ", ".join(f"{r['viewers']}: {r['load_average'][0]:.1f}" for r in results)
    ax.set_title(
        f"stagecast serve CPU vs viewers, 1 publisher ~1.15 Mbit/s ({os.cpu_count()} cores)\n"
        f"1-min load average per step: {loads}",
        fontsize=8,
    )
    fig.legend(loc="upper left", bbox_to_anchor=(0.12, 0.88), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="50,100,150,200,250,300")
    parser.add_argument("--steady", type=float, default=60.0, help="steady seconds per step")
    parser.add_argument("--ramp", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bitrate", default="1000k")
    parser.add_argument("--max-loss", type=float, default=0.5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument(
        "--replot",
        type=Path,
        nargs="+",
        help="only merge these --json files (all their steps, by N) into --json/--plot",
    )
    args = parser.parse_args()
    if args.replot:
        merged = [r for path in args.replot for r in json.loads(path.read_text())["results"]]
        merged.sort(key=lambda r: (r["viewers"], r["loss_percent"]))
        best = max((r["viewers"] for r in merged if r["held"]), default=0)
        if args.json:
            args.json.write_text(json.dumps({"results": merged, "sustained": best}, indent=2))
        if args.plot:
            plot(merged, args.plot)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="stagecast-capacity-"))
    port = free_port()
    server = start_server(tmp / "data", port, tmp / "serve.log")
    results: list[dict[str, Any]] = []
    try:
        for n in (int(s) for s in args.steps.split(",")):
            result = step(f"http://127.0.0.1:{port}", server.pid, n, args)
            results.append(result)
            held = result["connected"] == n and result["loss_percent"] < args.max_loss
            result["held"] = held
            print(
                f"N={n}: connected {result['connected']}, loss {result['loss_percent']} %, "
                f"{result['per_viewer_kbps']} kbit/s each (publisher {result['publisher_kbps']}),"
                f" server CPU {result['server_cpu_percent']} %, latency p50 "
                f"{result['latency_ms']['p50']} ms, load {result['load_average']}"
                f" -> {'holds' if held else 'DOES NOT HOLD'}",
                flush=True,
            )
            if not held:
                break
    finally:
        os.kill(server.pid, signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(server.pid, signal.SIGKILL)
            server.wait()
    best = max((r["viewers"] for r in results if r["held"]), default=0)
    print(f"largest N sustained with loss < {args.max_loss} % for {args.steady:.0f} s: {best}")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "sustained": best}, indent=2))
    if args.plot and results:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
