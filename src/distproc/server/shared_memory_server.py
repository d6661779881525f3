"""The server of a ``SharedMemoryManager``: it also tracks shared memory segments.

Clients tell it each segment they create (``track_segment``); it unlinks
what is left when it shuts down, as the stdlib's ``SharedMemoryServer`` does.
"""

from __future__ import annotations

import os
from multiprocessing import shared_memory
from typing import Any

from .core import Server

__all__ = ["SharedMemoryServer"]


class _SegmentTracker:
    """The shared memory segments a SharedMemoryServer unlinks when it stops."""

    def __init__(self, name: str) -> None:
        self.shared_memory_context_name = name
        self.segment_names: list[str] = []

    def register_segment(self, segment_name: str) -> None:
        self.segment_names.append(segment_name)

    def destroy_segment(self, segment_name: str) -> None:
        self.segment_names.remove(segment_name)
        segment = shared_memory.SharedMemory(segment_name)
        segment.close()
        segment.unlink()

    def unlink(self) -> None:
        for name in list(self.segment_names):
            self.destroy_segment(name)


class SharedMemoryServer(Server):
    """A server that also tracks shared memory segments and unlinks them at shutdown."""

    public = [*Server.public, "track_segment", "release_segment", "list_segments"]
    loop_methods = Server.loop_methods | {"track_segment", "list_segments"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        address = self.address
        if isinstance(address, bytes):
            address = os.fsdecode(address)
        self.shared_memory_context = _SegmentTracker(f"shm_{address}_{os.getpid()}")

    def create(
        self, c: Any, typeid: str, /, *args: Any, **kwargs: Any
    ) -> tuple[str, tuple[str, ...]]:
        if hasattr(self.registry[typeid][-1], "_shared_memory_proxy"):
            kwargs["shared_memory_context"] = self.shared_memory_context
        return super().create(c, typeid, *args, **kwargs)

    def shutdown(self, c: Any) -> None:
        self.shared_memory_context.unlink()

    def serve(self) -> None:
        try:
            super().serve()
        finally:
            self.shared_memory_context.unlink()

    def track_segment(self, c: Any, segment_name: str) -> None:
        self.shared_memory_context.register_segment(segment_name)

    def release_segment(self, c: Any, segment_name: str) -> None:
        self.shared_memory_context.destroy_segment(segment_name)

    def list_segments(self, c: Any) -> list[str]:
        return self.shared_memory_context.segment_names
