"""The Stagecast Python client: REST API, SFU signalling, media sources and viewers."""

from .api import ApiClient, ApiError, Credentials, IceServer
from .media import SyntheticVideoTrack, ToneAudioTrack, file_source, read_frame_counter
from .sfu import SfuConnection, SignallingError, ice_configuration
from .viewer import KindStats, Viewer, ViewerMode

__all__ = [
    "ApiClient",
    "ApiError",
    "Credentials",
    "IceServer",
    "KindStats",
    "SfuConnection",
    "SignallingError",
    "SyntheticVideoTrack",
    "ToneAudioTrack",
    "Viewer",
    "ViewerMode",
    "file_source",
    "ice_configuration",
    "read_frame_counter",
]
