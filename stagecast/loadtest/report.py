"""Aggregating the workers' counters into phases, the live progress line and the summary.

Workers report cumulative counters; a phase is the difference between the aggregate at its
start and at its end, plus the first-frame times and latency samples gathered during it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

COUNTERS = (
    "video_packets",
    "audio_packets",
    "video_gaps",
    "audio_gaps",
    "video_bytes",
    "audio_bytes",
)


def percentiles(values: list[float]) -> dict[str, Any]:
    """``{count, p50, p95, max}`` in the values' unit (nearest rank; None when empty)."""
    if not values:
        return {"count": 0, "p50": None, "p95": None, "max": None}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return round(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)], 1)

    return {"count": len(ordered), "p50": rank(50), "p95": rank(95), "max": round(ordered[-1], 1)}


@dataclass
class Snapshot:
    """The sum over workers at one moment (``at``: seconds since the run started)."""

    at: float = 0.0
    scheduled: int = 0
    connected: int = 0
    pending: int = 0
    failed: int = 0
    receiving: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    publisher_bytes: int = 0
    publisher_frames: int = 0

    @classmethod
    def combine(
        cls, at: float, replies: list[dict[str, Any]], publisher: dict[str, Any] | None
    ) -> Snapshot:
        snap = cls(at=at)
        for reply in replies:
            for name in ("scheduled", "connected", "pending", "failed", "receiving"):
                setattr(snap, name, getattr(snap, name) + int(reply.get(name, 0)))
            for code, count in reply.get("errors", {}).items():
                snap.errors[code] = snap.errors.get(code, 0) + int(count)
            for key in COUNTERS:
                snap.counters[key] += int(reply.get(key, 0))
        if publisher is not None:
            snap.publisher_bytes = int(publisher.get("bytes_sent", 0))
            snap.publisher_frames = int(publisher.get("frames", 0))
        return snap


def _loss(packets: int, gaps: int) -> float:
    return round(100.0 * gaps / (packets + gaps), 3) if packets + gaps else 0.0


@dataclass
class Phase:
    """One phase of the run (``ramp``, ``steady``) or the whole run (``total``)."""

    name: str
    start: Snapshot
    end: Snapshot | None = None
    first_frame_ms: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    receiving_samples: list[int] = field(default_factory=list)

    def add(self, snap: Snapshot, first_frames: list[float], latencies: list[float]) -> None:
        self.end = snap
        self.first_frame_ms.extend(first_frames)
        self.latency_ms.extend(latencies)
        self.receiving_samples.append(snap.receiving)

    def summary(self) -> dict[str, Any]:
        end = self.end or self.start
        start = self.start
        duration = max(0.0, end.at - start.at)
        delta = {k: end.counters[k] - start.counters[k] for k in COUNTERS}
        errors = {
            code: count - start.errors.get(code, 0)
            for code, count in end.errors.items()
            if count - start.errors.get(code, 0) > 0
        }
        received = delta["video_bytes"] + delta["audio_bytes"]
        aggregate = received * 8 / duration / 1000 if duration > 0 else 0.0
        samples = self.receiving_samples or [end.receiving]
        mean_receiving = sum(samples) / len(samples)
        publisher = end.publisher_bytes - start.publisher_bytes
        return {
            "name": self.name,
            "start_s": round(start.at, 3),
            "end_s": round(end.at, 3),
            "duration_s": round(duration, 3),
            "viewers": {
                "target": end.scheduled,
                "connected": end.connected,
                "receiving": end.receiving,
                "pending": end.pending,
                "join_failures": end.failed - start.failed,
            },
            "errors": errors,
            "bitrate_kbps": {
                "aggregate": round(aggregate, 1),
                "per_viewer": round(aggregate / mean_receiving, 1) if mean_receiving else 0.0,
                "publisher": round(publisher * 8 / duration / 1000, 1) if duration > 0 else 0.0,
            },
            "packets": delta,
            "loss_percent": {
                "video": _loss(delta["video_packets"], delta["video_gaps"]),
                "audio": _loss(delta["audio_packets"], delta["audio_gaps"]),
                "total": _loss(
                    delta["video_packets"] + delta["audio_packets"],
                    delta["video_gaps"] + delta["audio_gaps"],
                ),
            },
            "first_frame_ms": percentiles(self.first_frame_ms),
            "latency_ms": percentiles(self.latency_ms),
        }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def progress_line(
    phase: str,
    elapsed: float,
    snap: Snapshot,
    target: int,
    kbps: float,
    loss: float,
    first_frames: list[float],
    latencies: list[float],
) -> str:
    """One line: connected/target, failures by code, bitrate, loss, first frame, latency."""
    errors = " ".join(f"{code}={n}" for code, n in sorted(snap.errors.items())) or "none"
    ff, lat = percentiles(first_frames), percentiles(latencies)
    per_viewer = kbps / snap.receiving if snap.receiving else 0.0
    return (
        f"[{phase} {elapsed:5.1f}s] connected {snap.connected}/{target}"
        f" (receiving {snap.receiving}) failed {snap.failed} [{errors}]"
        f" | {kbps / 1000:.1f} Mbit/s ({per_viewer:.0f} kbit/s each) loss {loss:.2f}%"
        f" | first frame p50 {_ms(ff['p50'])} p95 {_ms(ff['p95'])} ms"
        f" | latency p50 {_ms(lat['p50'])} p95 {_ms(lat['p95'])} ms"
    )


def summary_table(report: dict[str, Any]) -> str:
    """The per-phase table printed at the end."""
    rows = [
        (
            "phase",
            "secs",
            "conn/target",
            "fail",
            "Mbit/s",
            "kbit/s/v",
            "pub kbit/s",
            "loss %",
            "ff p50",
            "ff p95",
            "lat p50",
            "lat p95",
        ),
    ]
    for name in ("ramp", "steady", "total"):
        p = report["phases"].get(name)
        if p is None:
            continue
        v, b = p["viewers"], p["bitrate_kbps"]
        rows.append(
            (
                name,
                f"{p['duration_s']:.1f}",
                f"{v['connected']}/{v['target']}",
                str(v["join_failures"]),
                f"{b['aggregate'] / 1000:.1f}",
                f"{b['per_viewer']:.0f}",
                f"{b['publisher']:.0f}",
                f"{p['loss_percent']['total']:.2f}",
                _ms(p["first_frame_ms"]["p50"]),
                _ms(p["first_frame_ms"]["p95"]),
                _ms(p["latency_ms"]["p50"]),
                _ms(p["latency_ms"]["p95"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    out = [
        f"Stagecast load test: {report['target']['url']} call {report['target']['call_cid']}"
        + (" (interrupted)" if report["interrupted"] else ""),
        *lines,
        "first frame (ff) and latency (lat) in ms; bitrate per viewer over receiving viewers",
    ]
    errors = report["errors"]
    if errors:
        out.append(
            "join failures by code: " + ", ".join(f"{c}: {n}" for c, n in sorted(errors.items()))
        )
        for code, message in sorted(report.get("error_examples", {}).items()):
            out.append(f"  {code}: {message}")
    for failure in report["setup_errors"]:
        out.append(f"setup: {failure['step']} failed: {failure['code']}: {failure['message']}")
    return "\n".join(out)
