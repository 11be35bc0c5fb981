"""The editors' side of the engine: wire protocol, signed framing and `Client`. Never imports torch."""

from editor_bridge.client import Client
from editor_bridge.connection import ConnectionInfo, default_home, read_connection_file, write_connection_file
from editor_bridge.errors import BridgeError, EngineNotRunning, JobCancelled, RemoteError, RequestTimeout
from editor_bridge.protocol import PROTOCOL_VERSION
from editor_bridge.wire import Message

__all__ = [
    "PROTOCOL_VERSION",
    "BridgeError",
    "Client",
    "ConnectionInfo",
    "EngineNotRunning",
    "JobCancelled",
    "Message",
    "RemoteError",
    "RequestTimeout",
    "default_home",
    "read_connection_file",
    "write_connection_file",
]
