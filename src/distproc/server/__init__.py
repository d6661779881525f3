"""The server side: one event loop for every socket, an object table, dispatch."""

from .core import Server, ServerConfig

__all__ = ["Server", "ServerConfig"]
