"""Bad calls from an authenticated client, through distproc's own client.

Unknown typeids, methods that are not exposed and results that cannot be
pickled are reported as :class:`distproc.errors.RemoteError` (also a
``multiprocessing.managers.RemoteError``) and leave the connection usable.
"""

from __future__ import annotations

import multiprocessing.managers as mp_managers
from collections.abc import Iterator

import pytest

from distproc.client.connection import Client, Connection, dispatch
from distproc.errors import RemoteError

from ._support import QueueServer
from ._wire import round_trip


@pytest.fixture
def thing(server: QueueServer) -> Iterator[str]:
    """The ident of a ``Thing`` on ``server``, released at teardown."""
    with Client(server.address, server.authkey) as conn:
        ident, exposed = dispatch(conn, None, "create", ("Thing",))
    assert "hidden" not in exposed
    yield ident
    with Client(server.address, server.authkey) as conn:
        dispatch(conn, None, "decref", (ident,))


@pytest.fixture
def channel(server: QueueServer) -> Iterator[Connection]:
    """An object-call channel on ``server``, as a proxy's per-thread connection."""
    with Client(server.address, server.authkey) as conn:
        dispatch(conn, None, "accept_connection", ("fault-test",))
        yield conn


def _assert_remote_error(exc: BaseException, *names: str) -> None:
    assert isinstance(exc, RemoteError)
    assert isinstance(exc, mp_managers.RemoteError)
    text = str(exc)
    for name in names:
        assert name in text, f"{name!r} not in {text!r}"


def test_unknown_typeid(server: QueueServer) -> None:
    with Client(server.address, server.authkey) as conn, pytest.raises(RemoteError) as info:
        dispatch(conn, None, "create", ("NoSuchTypeid",))
    _assert_remote_error(info.value, "NoSuchTypeid")
    with Client(server.address, server.authkey) as conn:
        assert dispatch(conn, None, "number_of_objects") == 0
    round_trip(server.address, server.authkey)


@pytest.mark.parametrize("typeid", [None, 42, ("Queue",), ""])
def test_typeid_of_the_wrong_type(server: QueueServer, typeid: object) -> None:
    with Client(server.address, server.authkey) as conn, pytest.raises(RemoteError):
        dispatch(conn, None, "create", (typeid,))
    round_trip(server.address, server.authkey)


def test_create_with_bad_constructor_arguments(server: QueueServer) -> None:
    with Client(server.address, server.authkey) as conn, pytest.raises(RemoteError) as info:
        dispatch(conn, None, "create", ("Queue", "not-an-int", "extra"))
    _assert_remote_error(info.value, "TypeError")
    round_trip(server.address, server.authkey)


@pytest.mark.parametrize("methodname", ["hidden", "_private", "__init__", "no_such_method"])
def test_method_not_exposed(
    server: QueueServer, thing: str, channel: Connection, methodname: str
) -> None:
    with pytest.raises(RemoteError) as info:
        dispatch(channel, thing, methodname)
    _assert_remote_error(info.value, methodname)
    # The same connection is still in step.
    assert dispatch(channel, thing, "ok", (7,)) == 7
    round_trip(server.address, server.authkey)


def test_unknown_ident_on_a_channel(server: QueueServer, channel: Connection) -> None:
    with pytest.raises(RemoteError) as info:
        dispatch(channel, "12345abc", "ok")
    _assert_remote_error(info.value, "12345abc")
    round_trip(server.address, server.authkey)


@pytest.mark.parametrize(
    ("methodname", "what"),
    [
        ("make_lambda", "lambda"),
        ("make_lock", "lock"),
        ("raise_unpicklable", "lock"),
    ],
)
def test_unpicklable_result(
    server: QueueServer, thing: str, channel: Connection, methodname: str, what: str
) -> None:
    for _ in range(3):
        with pytest.raises(RemoteError) as info:
            dispatch(channel, thing, methodname)
        _assert_remote_error(info.value)
        assert what in str(info.value).lower()
        assert dispatch(channel, thing, "ok", ("still here",)) == "still here"
    round_trip(server.address, server.authkey)


def test_unpicklable_getvalue(server: QueueServer, channel: Connection) -> None:
    """``#GETVALUE`` of a queue (which holds locks) cannot be sent back."""
    with Client(server.address, server.authkey) as conn:
        ident, _ = dispatch(conn, None, "create", ("Queue",))
    with pytest.raises(RemoteError):
        dispatch(channel, ident, "#GETVALUE")
    dispatch(channel, ident, "put", (1,))
    assert dispatch(channel, ident, "get") == 1
    with Client(server.address, server.authkey) as conn:
        dispatch(conn, None, "decref", (ident,))
    round_trip(server.address, server.authkey)


def test_result_that_fails_to_unpickle_on_the_client(
    server: QueueServer, thing: str, channel: Connection
) -> None:
    """The reply arrives whole and fails to load: the connection stays in step."""
    with pytest.raises(ValueError, match="refuses to be unpickled"):
        dispatch(channel, thing, "make_unloadable")
    assert dispatch(channel, thing, "ok", (3,)) == 3
    round_trip(server.address, server.authkey)


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("incref", ("no-such-id",)),
        ("decref", ()),
        ("get_methods", ("not-a-token",)),
        ("number_of_objects", (1, 2, 3)),
    ],
)
def test_bad_server_method_arguments(
    server: QueueServer, method: str, args: tuple[object, ...]
) -> None:
    with Client(server.address, server.authkey) as conn, pytest.raises(RemoteError):
        dispatch(conn, None, method, args)
    round_trip(server.address, server.authkey)
