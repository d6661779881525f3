"""The client side: connections to a manager's server."""

from .connection import Client, Connection, convert_to_error, dispatch

__all__ = ["Client", "Connection", "convert_to_error", "dispatch"]
