"""The server side: one event loop for every socket, an object table, dispatch."""

from .config import ServerConfig
from .core import Server
from .loop_service import CallConnection, LoopCall, LoopService, StatusReporter

__all__ = ["CallConnection", "LoopCall", "LoopService", "Server", "ServerConfig", "StatusReporter"]
