"""Names on the bus that the coordinator, SFU nodes and workers agree on.

- ``CONTROL`` (pub/sub, coordinator -> every SFU node): ``{"type": "live_started" |
  "live_stopped" | "ended", "cid"}``.
- ``SFU_EVENTS`` (job queue, SFU nodes -> one coordinator): ``{"type": "participant_joined" |
  "participant_left" | "track_published" | "track_unpublished" | "mute_changed", "cid",
  "session_id", "participant_id", "user_id", "role", "hidden", "node_id", "at", ...}``. A queue,
  not pub/sub, so that with several coordinators each report is handled exactly once.
- ``EVENTS`` (pub/sub, coordinator -> every coordinator): API events, for WebSocket clients.
- ``node_channel(node_id)`` (request/reply, coordinator -> one SFU node): WHIP/WHEP offers.
- ``call_state_key(cid)`` (registry): ``{"live", "ended"}``, so a node that opens a room late
  still knows whether the call is live.
- ``node_key(node_id)`` (registry): a node's heartbeat, see :mod:`stagecast.nodes`.
- ``EGRESS_JOBS`` (job queue, coordinator -> one egress worker): ``{"egress_id", "kind":
  "hls" | "recording", "cid", "token", "prefix", "segment_seconds"}``; the lease is renewed while
  the job runs, so a dead worker's job is taken again.
- ``EGRESS_CONTROL`` (pub/sub, coordinator -> egress workers): ``{"type": "stop", "egress_id"}``;
  ``egress_stop_key(egress_id)`` (registry) says the same to a worker that missed it.
- ``EGRESS_REPORTS`` (job queue, egress workers -> one coordinator): ``{"type": "started" |
  "stopped" | "ready" | "failed", "egress_id", "kind", "cid", "at", "attempt", ...}``.
"""

from __future__ import annotations

CONTROL = "calls.control"
SFU_EVENTS = "sfu-events"
EVENTS = "events"
WEBHOOKS = "webhooks"
NODE_DIRECTORY = "nodes"
CALL_STATE_TTL_SECONDS = 7 * 86400
EGRESS_JOBS = "egress-jobs"
EGRESS_CONTROL = "egress.control"
EGRESS_REPORTS = "egress-reports"
EGRESS_STOP_TTL_SECONDS = 86400


def node_key(node_id: str) -> str:
    return f"{NODE_DIRECTORY}/{node_id}"


def node_channel(node_id: str) -> str:
    return f"sfu.node.{node_id}"


def call_state_key(cid: str) -> str:
    return f"callstate/{cid}"


def egress_stop_key(egress_id: str) -> str:
    return f"egressstop/{egress_id}"
