"""RTMP ingest: OBS/ffmpeg publish into a call as the user their stream key names.

See ``docs/ingest.md``. :class:`~ingest.rtmp.RtmpServer` speaks RTMP (one asyncio task per
connection, many publishers at once); :class:`~ingest.service.IngestService` checks each
stream key with the coordinator and publishes what arrives into the SFU like a host.
"""

from .rtmp import PublishRefused, RtmpServer
from .service import IngestService

__all__ = ["IngestService", "PublishRefused", "RtmpServer"]
