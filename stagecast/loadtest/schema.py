"""The JSON Schema of the ``stagecast loadtest --json`` report.

``docs/loadtest.schema.json`` is this schema, written out (``python -m
stagecast.loadtest.schema > docs/loadtest.schema.json``); a test checks they agree.
"""

from __future__ import annotations

import json
from typing import Any

SCHEMA_ID = "https://stagecast.dev/schemas/loadtest-report-v1.json"

_NUMBER_OR_NULL: dict[str, Any] = {"type": ["number", "null"]}

_DISTRIBUTION: dict[str, Any] = {
    "type": "object",
    "description": "Nearest-rank percentiles in milliseconds (null when there is no sample).",
    "required": ["count", "p50", "p95", "max"],
    "additionalProperties": False,
    "properties": {
        "count": {"type": "integer", "minimum": 0},
        "p50": _NUMBER_OR_NULL,
        "p95": _NUMBER_OR_NULL,
        "max": _NUMBER_OR_NULL,
    },
}

_COUNT = {"type": "integer", "minimum": 0}
_ERRORS: dict[str, Any] = {
    "type": "object",
    "description": "Viewer join failures by error code: the API's or the SFU's code "
    "(unauthenticated, forbidden, call_in_backstage, capacity_exhausted, ...), or timeout, "
    "network_error, or an exception name.",
    "additionalProperties": {"type": "integer", "minimum": 1},
}

_PHASE: dict[str, Any] = {
    "type": "object",
    "required": [
        "name",
        "start_s",
        "end_s",
        "duration_s",
        "viewers",
        "errors",
        "bitrate_kbps",
        "packets",
        "loss_percent",
        "first_frame_ms",
        "latency_ms",
    ],
    "additionalProperties": False,
    "properties": {
        "name": {"enum": ["ramp", "steady", "total"]},
        "start_s": {"type": "number", "description": "Seconds from the first join."},
        "end_s": {"type": "number"},
        "duration_s": {"type": "number", "minimum": 0},
        "viewers": {
            "type": "object",
            "description": "At the end of the phase.",
            "required": ["target", "connected", "receiving", "pending", "join_failures"],
            "additionalProperties": False,
            "properties": {
                "target": {**_COUNT, "description": "Viewers scheduled so far."},
                "connected": {**_COUNT, "description": "Joined and subscribed, still there."},
                "receiving": {**_COUNT, "description": "Got a packet in the last 2 s."},
                "pending": {**_COUNT, "description": "Still joining."},
                "join_failures": {**_COUNT, "description": "Failed during this phase."},
            },
        },
        "errors": _ERRORS,
        "bitrate_kbps": {
            "type": "object",
            "description": "kbit/s of whole RTP datagrams (header, payload, SRTP tag).",
            "required": ["aggregate", "per_viewer", "publisher"],
            "additionalProperties": False,
            "properties": {
                "aggregate": {"type": "number", "minimum": 0},
                "per_viewer": {
                    "type": "number",
                    "minimum": 0,
                    "description": "Aggregate over the mean number of receiving viewers.",
                },
                "publisher": {"type": "number", "minimum": 0},
            },
        },
        "packets": {
            "type": "object",
            "description": "Received by all viewers during the phase; gaps are sequence "
            "numbers never seen (lost).",
            "required": [
                "video_packets",
                "audio_packets",
                "video_gaps",
                "audio_gaps",
                "video_bytes",
                "audio_bytes",
            ],
            "additionalProperties": False,
            "properties": {
                k: _COUNT
                for k in (
                    "video_packets",
                    "audio_packets",
                    "video_gaps",
                    "audio_gaps",
                    "video_bytes",
                    "audio_bytes",
                )
            },
        },
        "loss_percent": {
            "type": "object",
            "description": "100 * gaps / (packets + gaps).",
            "required": ["video", "audio", "total"],
            "additionalProperties": False,
            "properties": {
                k: {"type": "number", "minimum": 0, "maximum": 100}
                for k in ("video", "audio", "total")
            },
        },
        "first_frame_ms": {
            **_DISTRIBUTION,
            "description": "From a viewer's join request to its first video frame (thin: the "
            "first packet with the marker bit; decoding: the first decoded frame), for "
            "viewers whose first frame came in this phase.",
        },
        "latency_ms": {
            **_DISTRIBUTION,
            "description": "Glass-to-glass: from the wall-clock time burned into a frame by "
            "the publisher to that frame decoded by a decoding viewer (same machine clock).",
        },
    },
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "Stagecast load test report",
    "description": "What `stagecast loadtest --json` prints on stdout (docs/loadtest.md).",
    "type": "object",
    "required": [
        "version",
        "target",
        "config",
        "started_at",
        "ended_at",
        "interrupted",
        "setup_errors",
        "errors",
        "error_examples",
        "phases",
        "machine",
        "exit_code",
    ],
    "additionalProperties": False,
    "properties": {
        "$schema": {"const": SCHEMA_ID},
        "version": {"const": 1},
        "target": {
            "type": "object",
            "required": ["url", "call_cid", "loopback"],
            "additionalProperties": False,
            "properties": {
                "url": {"type": "string"},
                "call_cid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]+:[a-zA-Z0-9_-]+$"},
                "loopback": {"type": "boolean"},
            },
        },
        "config": {
            "type": "object",
            "required": [
                "viewers",
                "full_viewers",
                "ramp_per_second",
                "duration_s",
                "workers",
                "publish",
            ],
            "additionalProperties": False,
            "properties": {
                "viewers": _COUNT,
                "full_viewers": _COUNT,
                "ramp_per_second": {"type": "number", "exclusiveMinimum": 0},
                "duration_s": {"type": "number", "exclusiveMinimum": 0},
                "workers": _COUNT,
                "publish": {
                    "oneOf": [
                        {"type": "null"},
                        {
                            "type": "object",
                            "required": [
                                "codec",
                                "width",
                                "height",
                                "fps",
                                "bitrate_bps",
                                "file",
                            ],
                            "additionalProperties": False,
                            "properties": {
                                "codec": {"enum": ["vp8", "h264"]},
                                "width": {"type": "integer"},
                                "height": {"type": "integer"},
                                "fps": {"type": "number"},
                                "bitrate_bps": {"type": "integer"},
                                "file": {"type": ["string", "null"]},
                            },
                        },
                    ]
                },
            },
        },
        "started_at": {"type": "string", "format": "date-time"},
        "ended_at": {"type": "string", "format": "date-time"},
        "interrupted": {"type": "boolean", "description": "Stopped by SIGINT/SIGTERM."},
        "setup_errors": {
            "type": "array",
            "description": "Steps before the viewers that failed (create_call, publish, go_live).",
            "items": {
                "type": "object",
                "required": ["step", "code", "message"],
                "additionalProperties": False,
                "properties": {
                    "step": {"enum": ["create_call", "publish", "go_live"]},
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
        },
        "errors": {**_ERRORS, "description": "Viewer join failures over the whole run."},
        "error_examples": {
            "type": "object",
            "description": "One message per error code.",
            "additionalProperties": {"type": "string"},
        },
        "phases": {
            "type": "object",
            "description": "ramp: from the first join until every viewer is connected or "
            "failed; steady: from then to the end (absent if the ramp never ended); total. "
            "All absent when the run stopped before any viewer was scheduled.",
            "additionalProperties": False,
            "properties": {"ramp": _PHASE, "steady": _PHASE, "total": _PHASE},
        },
        "machine": {
            "type": "object",
            "description": "The load-test machine.",
            "required": ["cpus", "load_average", "worker_cpu_seconds"],
            "additionalProperties": False,
            "properties": {
                "cpus": {"type": "integer", "minimum": 1},
                "load_average": {
                    "type": "array",
                    "items": {"type": "number"},
                    "minItems": 3,
                    "maxItems": 3,
                },
                "worker_cpu_seconds": {"type": "number", "minimum": 0},
            },
        },
        "exit_code": {
            "enum": [0, 1, 130],
            "description": "0: no failure; 1: a set-up step or a viewer failed; 130: interrupted.",
        },
    },
}


def dump() -> str:
    return json.dumps(SCHEMA, indent=2) + "\n"


if __name__ == "__main__":
    print(dump(), end="")
