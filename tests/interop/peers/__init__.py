"""Peer scripts of the interop tests, run as ``python -m peers.<script>`` from tests/interop.

``stdlib_server``, ``stdlib_client`` and ``peer_common`` import only the
standard library and must run on CPython 3.8+; ``distproc_server`` runs on the
dev interpreter.
"""
