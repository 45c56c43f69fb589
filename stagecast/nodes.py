"""The SFU node registry: nodes heartbeat their address and load; the coordinator picks one."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from stagecast.bus import Bus
from stagecast.protocol import NODE_DIRECTORY, node_key


@dataclass(slots=True)
class NodeInfo:
    id: str
    url: str  # the node's HTTP base URL
    ws_url: str  # its signalling WebSocket
    capacity: int  # participants it admits
    load: int = 0  # participants it holds now
    region: str = ""
    draining: bool = False
    calls: list[str] = field(default_factory=list)  # cids it carries

    @property
    def free(self) -> int:
        return self.capacity - self.load

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeInfo:
        return cls(
            id=str(data["id"]),
            url=str(data["url"]),
            ws_url=str(data["ws_url"]),
            capacity=int(data["capacity"]),
            load=int(data.get("load", 0)),
            region=str(data.get("region", "")),
            draining=bool(data.get("draining", False)),
            calls=[str(cid) for cid in data.get("calls", [])],
        )


async def heartbeat(bus: Bus, node: NodeInfo, ttl_seconds: float) -> None:
    await bus.set_key(node_key(node.id), node.to_dict(), ttl_seconds)


async def deregister(bus: Bus, node_id: str) -> None:
    await bus.delete_key(node_key(node_id))


async def live_nodes(bus: Bus) -> list[NodeInfo]:
    nodes = []
    for value in (await bus.keys_in(NODE_DIRECTORY)).values():
        try:
            nodes.append(NodeInfo.from_dict(value))
        except (KeyError, TypeError, ValueError):
            continue  # a malformed heartbeat is not a node
    return nodes


def choose_node(nodes: list[NodeInfo], cid: str, region: str = "") -> NodeInfo | None:
    """The node for a new participant of ``cid``.

    Among nodes that admit more participants: those in ``region`` first (when given), then the
    node already carrying the call, then the least loaded.
    """
    open_nodes = [node for node in nodes if not node.draining and node.free > 0]
    if not open_nodes:
        return None
    return min(
        open_nodes,
        key=lambda node: (
            bool(region) and node.region != region,
            cid not in node.calls,
            node.load / node.capacity,
            node.id,
        ),
    )
