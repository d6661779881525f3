"""The reliable master/worker task system: service, Executor and worker runtime."""

from .executor import Executor

__all__ = ["Executor"]
