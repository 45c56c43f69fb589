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
"""

from __future__ import annotations

CONTROL = "calls.control"
SFU_EVENTS = "sfu-events"
EVENTS = "events"
WEBHOOKS = "webhooks"
NODE_DIRECTORY = "nodes"
CALL_STATE_TTL_SECONDS = 7 * 86400


def node_key(node_id: str) -> str:
    return f"{NODE_DIRECTORY}/{node_id}"


def node_channel(node_id: str) -> str:
    return f"sfu.node.{node_id}"


def call_state_key(cid: str) -> str:
    return f"callstate/{cid}"
