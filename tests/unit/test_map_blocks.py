"""``distproc map``'s blocks: the JSON form, cutting the input, and what a block run does
when a block is lost or its output does not fit (on a stand-in Executor, in this process)."""

from __future__ import annotations

import concurrent.futures
import datetime
import hashlib
import io
import json
import os
import threading
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

import distproc
from distproc.cli.lines import lines_at_hand
from distproc.errors import WorkerLostError
from distproc.tasks.blockmap import BlockReader, BlockRun, LinesOut
from distproc.tasks.blocks import run_block
from distproc.tasks.payloads import decode


def echo(value: Any) -> Any:
    return value


def out_of(value: Any) -> bytes:
    """The output line of a call whose result is ``value``."""
    data = json.dumps(value).encode() + b"\n"
    return bytes(run_block(echo, data, 1, False, False, 1 << 20)[1])


def result_of(value: Any) -> bytes:
    """The output line of a call that returns ``value`` (which JSON may not hold)."""
    return bytes(run_block(lambda _: value, b"0\n", 1, False, False, 1 << 20)[1])


# --------------------------------------------------------------- the JSON form
@pytest.mark.parametrize(
    ("value", "line"),
    [
        (1, b"1"),
        ([1, 2.5, "a"], b'[1,2.5,"a"]'),
        ({"b": 1, "a": None}, b'{"b":1,"a":null}'),  # keys in their order, no spaces
        (0.1, b"0.1"),
        (1e-7, b"1e-7"),
        (1.5e-6, b"1.5e-6"),
        (1e-5, b"0.00001"),
        (1e16, b"1e+16"),
        (1e22, b"1e+22"),
        (5e-324, b"5e-324"),
        (-0.0, b"-0.0"),
        (2**64, b"18446744073709551616"),  # beyond 64 bits: in full, the same form
        (-(2**70), b"-1180591620717411303424"),
        ({"a": [2**65, 1.5e-6]}, b'{"a":[36893488147419103232,1.5e-6]}'),
        ("é✓ 中", "\"é✓ 中\"".encode()),  # UTF-8, no \u escapes
    ],
)
def test_results_are_written_in_one_form(value: Any, line: bytes) -> None:
    written = result_of(value)
    assert written == line + b"\n"
    assert json.loads(written) == value  # and read back as the same value


def test_keys_that_are_not_strings_are_written_as_the_json_module_does() -> None:
    value = {1: "a", None: "b", False: "c", 1.5: "d", 2**64: "e"}
    expected = b'{"1":"a","null":"b","false":"c","1.5":"d","18446744073709551616":"e"}\n'
    assert result_of(value) == expected
    assert json.loads(result_of({1: 2, None: 3})) == json.loads(json.dumps({1: 2, None: 3}))


def test_a_uuid_is_written_as_its_text() -> None:
    key = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert result_of(key) == b'"12345678-1234-5678-1234-567812345678"\n'


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (float("nan"), "Out of range float values are not JSON compliant"),
        ([1, float("inf")], "Out of range float values are not JSON compliant"),
        ({"a": [2**64, float("-inf")]}, "Out of range float values are not JSON compliant"),
        ({1, 2}, "set"),
        (b"bytes", "bytes"),
        (datetime.date(2026, 1, 2), "date"),
        ("\ud800", "surrogates not allowed"),
    ],
)
def test_a_result_that_is_not_json_is_an_error_record(value: Any, why: str) -> None:
    [error] = [json.loads(result_of(value))["error"]]
    assert error["type"] == "TypeError"
    assert error["message"].startswith("the result is not JSON: ")
    assert why in error["message"]
    assert error["line"] == 1


def test_none_is_null_not_an_error() -> None:
    assert result_of(None) == b"null\n"
    assert result_of([None, 1.0]) == b"[null,1.0]\n"


@pytest.mark.parametrize(
    ("line", "value"),
    [
        (b"123456789012345678901234567890", 123456789012345678901234567890),  # exact
        (b'{"n": -98765432109876543210}', {"n": -98765432109876543210}),
        (b'"12345678901234567890123"', "12345678901234567890123"),
        (b"  7  \r", 7),  # spaces and a CR around the value
        (b'"caf\\u00e9"', "café"),
    ],
)
def test_input_lines_are_read_exactly(line: bytes, value: Any) -> None:
    seen: list[Any] = []
    run_block(seen.append, line + b"\n", 1, False, False, 1 << 20)
    assert seen == [value] and type(seen[0]) is type(value)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"NaN", "is not JSON"),
        (b"Infinity", "is not JSON"),
        (b"1e400", "is not JSON"),
        (b'"\\ud800"', "is not JSON"),
        (b"\xef\xbb\xbf1", "is not JSON"),  # a byte order mark, not at the input's start
        (b"\xff\xfe1", "is not UTF-8 (byte 0xff at position 0): JSON lines are UTF-8 text"),
        (b'"caf\xe9"', "is not UTF-8 (byte 0xe9 at position 4)"),
    ],
)
def test_input_lines_that_are_not_json_get_an_error_record(line: bytes, why: str) -> None:
    out, failed = run_block(echo, b"1\n" + line + b"\n", 7, False, False, 1 << 20)[1:3]
    first, error = out.splitlines()
    assert (first, failed) == (b"1", 1)
    record = json.loads(error)["error"]
    assert (record["type"], record["line"], record["traceback"]) == ("InputError", 8, None)
    assert record["message"].startswith("input line 8 ")
    assert why in record["message"]


def test_a_byte_order_mark_at_the_start_of_the_input_is_dropped() -> None:
    reader = BlockReader(io.BytesIO(b"\xef\xbb\xbf1\n2\n"), max_line=100)
    block = reader.next(1 << 16)
    assert block is not None and (block.data, block.start, block.end) == (b"1\n2\n", 3, 7)


def test_error_records_are_in_the_same_form() -> None:
    def fail(x: int) -> None:
        raise ValueError(f"no {x}")

    out = run_block(fail, b"5\n", 3, False, False, 1 << 20)[1]
    assert out.startswith(b'{"error":{"type":"ValueError","message":"no 5","traceback":"Traceback')
    assert out.endswith(b',"line":3}}\n')
    assert "in fail" in json.loads(out)["error"]["traceback"]


# ---------------------------------------------------------------- the reader
def test_blocks_are_whole_lines_numbered_by_counting_newlines() -> None:
    data = b"1\n\n22\n333\n4444\n55555\n6"
    hasher = hashlib.sha256()
    reader = BlockReader(io.BytesIO(data), max_line=100, hasher=hasher)
    blocks = []
    while (block := reader.next(5)) is not None:
        blocks.append(block)
    assert b"".join(b.data for b in blocks) == data
    assert all(b.data.endswith(b"\n") for b in blocks[:-1])
    assert [b.first for b in blocks] == [1 + data[: b.start].count(b"\n") for b in blocks]
    for block in blocks:
        assert block.digest.hexdigest() == hashlib.sha256(data[: block.end]).hexdigest()
    assert [b.data for b in blocks][:3] == [b"1\n\n", b"22\n", b"333\n"]
    assert blocks[3].data == b"4444\n"  # a line longer than the block: cut after it


def test_a_block_of_a_fixed_number_of_lines() -> None:
    reader = BlockReader(io.BytesIO(b"1\n2\n3\n4\n5\n"), max_line=100)
    assert [reader.next(1, 2).data for _ in range(3)] == [b"1\n2\n", b"3\n4\n", b"5\n"]  # type: ignore[union-attr]


def test_a_block_never_waits_for_input_that_has_not_arrived() -> None:
    read, write = os.pipe()
    with open(read, "rb") as stream, open(write, "wb", buffering=0) as writer:
        reader = BlockReader(stream, max_line=100)
        writer.write(b"1\n2")  # the second line is not whole yet
        block = reader.next(1 << 16)
        assert block is not None and block.data == b"1\n"  # here at once, not at the end
        writer.write(b"2\n")
        writer.close()
        assert reader.next(1 << 16).data == b"22\n"  # type: ignore[union-attr]
        assert reader.next(1 << 16) is None


def test_a_line_too_large_to_send_is_read_past_in_bounded_memory() -> None:
    big = b"x" * 1_000_000
    reader = BlockReader(io.BytesIO(b"1\n" + big + b"\n3\n"), max_line=1000)
    first = reader.next(1)
    skipped = reader.next(1)
    last = reader.next(1)
    assert first is not None and skipped is not None and last is not None
    assert (first.data, first.first) == (b"1\n", 1)
    assert (skipped.data, skipped.first, skipped.too_large) == (b"", 2, len(big) + 1)
    assert (last.data, last.first, last.start) == (b"3\n", 3, len(big) + 3)
    assert reader.next(1) is None


def test_lines_at_hand_only_when_all_of_the_input_has_arrived(tmp_path: Any) -> None:
    read, write = os.pipe()
    with open(read, "rb") as stream:
        os.write(write, b"1\n\n2\n")
        assert lines_at_hand(stream) is None  # the writer may write more
        os.close(write)
        assert lines_at_hand(stream) == 2
        assert stream.read() == b"1\n\n2\n"  # nothing was taken
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"")
    with path.open("rb") as f:
        assert lines_at_hand(f) == 0
    path.write_bytes(b"1\n" * 10_000)
    with path.open("rb") as f:
        assert lines_at_hand(f) is None  # too large to look at first


# ----------------------------------------------------------- a block run
class InProcess:
    """A stand-in Executor: runs each block in this process, or loses it (a dead worker).

    ``lose(block_data)`` says whether the worker running that block is lost;
    ``limit`` is the most output a block may return.
    """

    _codec = b"n"
    _opts: dict[str, Any] = {}
    max_task_bytes = 1 << 20

    def __init__(self, lose: Any = lambda data: False, limit: int = 1 << 20) -> None:
        self.lose = lose
        self.limit = limit
        self.sent: list[tuple[bytes, int, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def _enqueue(
        self, ref: str, payload: bytes, opts: Any, *, wait: bool = True
    ) -> concurrent.futures.Future[Any]:
        (data, first, star, records), _ = decode(payload, False)
        with self.lock:
            self.sent.append((data, first, opts))
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if self.lose(data):
            future.set_exception(WorkerLostError("task lost: took down 1 worker(s)", [("w1", "x")]))
        else:
            future.set_result(run_block(echo, data, first, star, records, self.limit))
        return future

    def _payload(self, ref: str, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        raise AssertionError("blocks are encoded by the run")

    def _check_size(self, size: int) -> None:
        pass

    def _count_workers(self) -> int | None:
        return 2

    def cancel_futures(self, futures: Iterable[concurrent.futures.Future[Any]]) -> int:
        return 0


def run(executor: InProcess, data: bytes, block_lines: int | None = None) -> list[LinesOut]:
    reader = BlockReader(io.BytesIO(data), max_line=1 << 20)
    block_run = BlockRun(executor, "tests:echo", reader, star=False, records=False,
                         read_ahead=1 << 20, block_lines=block_lines, input_end=len(data),
                         bar=None)  # fmt: skip
    outs: Iterator[LinesOut] = iter(block_run)
    return list(outs)


def test_a_lost_block_is_split_in_halves_sent_at_the_front() -> None:
    data = b"".join(b"%d\n" % i for i in range(1, 41))
    executor = InProcess(lose=lambda block: b"\n13\n" in b"\n" + block)
    outs = run(executor, data, block_lines=8)
    lines = b"".join(o.data for o in outs).splitlines()
    assert [json.loads(x) for i, x in enumerate(lines) if i != 12] == [
        i for i in range(1, 41) if i != 13
    ]
    error = json.loads(lines[12])["error"]
    assert (error["type"], error["line"]) == ("distproc.errors.WorkerLostError", 13)
    assert sum(o.failed for o in outs) == 1
    # Block 9-16 went back as 9-12 and 13-16, at the front, each with the loss as a strike;
    # 13-16 as 13-14 and 15-16, and 13-14 as 13 alone and 14 (here each loss is known as
    # soon as the block is sent, so a part is split before the next part is sent).
    again = [(first, opts) for data_, first, opts in executor.sent if opts.get("front")]
    assert [first for first, _ in again] == [9, 13, 13, 13, 14, 15]
    assert all(opts["strikes"] == 1 and opts["history"] == [["w1", "x"]] for _, opts in again)
    single = [opts for data_, first, opts in executor.sent if data_ == b"13\n"]
    assert single and all("split" not in opts for opts in single)
    starts = [data.index(b"%d\n" % (8 * k + 1)) for k in range(1, 5)]
    assert [o.end for o in outs if o.checkpoint] == [*starts, len(data)]


def test_a_block_whose_output_does_not_fit_comes_back_in_parts() -> None:
    data = b"".join(b"%d\n" % i for i in range(1, 201))
    executor = InProcess(limit=64)
    outs = run(executor, data, block_lines=50)
    assert b"".join(o.data for o in outs) == b"".join(b"%d\n" % i for i in range(1, 201))
    assert all(len(o.data) <= 64 for o in outs)
    rests = [first for _, first, opts in executor.sent if opts.get("front")]
    assert rests and rests == sorted(rests)
    ends = [o.end for o in outs]
    assert ends == sorted(ends) and ends[-1] == len(data)


def test_executor_map_lines_on_real_workers() -> None:
    data = b"".join(b"%d\n" % i for i in range(1, 5001)) + b"oops\n"
    with distproc.Executor(workers=2, progress=False) as ex:
        import dp_taskfns

        outs = list(ex.map_lines(dp_taskfns.square, io.BytesIO(data)))
    lines = b"".join(o.data for o in outs).splitlines()
    assert lines[:-1] == [b"%d" % (i * i) for i in range(1, 5001)]
    assert json.loads(lines[-1])["error"]["line"] == 5001
    assert sum(o.failed for o in outs) == 1
    assert outs[-1].end == len(data)
