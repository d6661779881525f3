"""``distproc map ... -o OUT --resume``: go on from where a run that stopped left OUT.

A run with ``-o OUT`` keeps a record beside it, ``OUT`` + :data:`SUFFIX`: a
first line that says what was run (the function, ``--star``, ``--records``),
then one *checkpoint* per block of input written, appended once the block's
output lines are in OUT: how many input bytes they cover, the SHA-256 of
those bytes, the next input line's number, and OUT's size, lines and error
records at that point.  A run that ends with every line written deletes the
record; one that is stopped (Ctrl-C, ``kill -9``, a full disk) leaves it.

``--resume`` then:

1. refuses a missing record, or one of a run of another function or options;
2. drops a truncated last line of OUT (the stop came mid-write);
3. takes the last checkpoint at or before OUT's end and reads the input up to
   it, refusing an input whose bytes there have another SHA-256 (OUT was
   written for a different input);
4. skips one non-blank input line for each complete line that OUT holds past
   the checkpoint (their results are in OUT already);
5. runs the rest, appending to OUT, so that OUT ends exactly as one
   uninterrupted run would have written it (order, error records, the
   count of failures in the exit status).

The record is flushed to the operating system after each checkpoint, not
synced to disk: it survives the run's process being killed, not a power
loss (nor does OUT, which is written the same way).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import IO, Any

from .errors import CliUsageError

__all__ = ["SUFFIX", "Checkpoints", "ResumePoint", "prepare_resume"]

#: The record's name is OUT's with this added.
SUFFIX = ".distproc-resume"
_FORMAT = 1
_ERROR_LINE = b'{"error":{'


def _record_path(out_path: str) -> str:
    return out_path + SUFFIX


@dataclasses.dataclass
class ResumePoint:
    """Where a resumed run starts: in the input, in OUT, and the counts so far."""

    offset: int = 0
    first_line: int = 1
    written: int = 0
    failed: int = 0
    out_size: int = 0  # OUT's size in bytes
    hasher: Any = dataclasses.field(default_factory=hashlib.sha256)


class Checkpoints:
    """The record beside OUT, appended to after each block of input written."""

    def __init__(self, out_path: str, header: dict[str, Any], keep: list[bytes] | None = None):
        self.path = _record_path(out_path)
        try:
            if keep is None:
                self.file: IO[bytes] = open(self.path, "wb")  # noqa: SIM115  # see close()
                self.file.write(_line({"distproc map": _FORMAT, **header}))
            else:
                tmp = self.path + ".tmp"
                with open(tmp, "wb") as f:
                    f.writelines(keep)
                os.replace(tmp, self.path)
                self.file = open(self.path, "ab")  # noqa: SIM115  # see close()
        except OSError as exc:
            raise CliUsageError(
                f"cannot write the resume record {self.path!r}: {exc.strerror or exc}"
            ) from None
        self.file.flush()

    def add(self, *, end: int, line: int, digest: Any, out: int, lines: int, failed: int) -> None:
        mark = {"end": end, "line": line, "sha256": digest.hexdigest(), "out": out,
                "lines": lines, "failed": failed}  # fmt: skip
        self.file.write(_line(mark))
        self.file.flush()

    def close(self, finished: bool) -> None:
        """Close the record; delete it when the run wrote every line (nothing to resume)."""
        self.file.close()
        if finished:
            os.unlink(self.path)


def _line(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode() + b"\n"


def prepare_resume(
    out_path: str, stream: IO[bytes], header: dict[str, Any]
) -> tuple[ResumePoint, Checkpoints]:
    """Check OUT's record against this run, cut OUT back, and read the input up to there."""
    path = _record_path(out_path)
    try:
        with open(path, "rb") as f:
            raw = f.read().split(b"\n")
    except FileNotFoundError:
        raise CliUsageError(
            f"nothing to resume in {out_path}: it has no record {path} of an unfinished "
            "run (the run finished, or OUT was not written by distproc map -o); run "
            "without --resume to start again"
        ) from None
    except OSError as exc:
        raise CliUsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        first = json.loads(raw[0])
        assert first.get("distproc map") == _FORMAT
    except (ValueError, AssertionError, AttributeError):
        raise CliUsageError(f"{path} is not a distproc map resume record") from None
    theirs = {k: first.get(k) for k in header}
    if theirs != header:
        said = ", ".join(f"{k} {v!r}" for k, v in theirs.items())
        raise CliUsageError(
            f"{out_path} was written by another run ({said}); resume it with the same "
            "function and options, or run without --resume to start again"
        )
    size = _drop_torn_line(out_path)
    marks, kept = [], [raw[0] + b"\n"]
    for line in raw[1:]:
        try:
            mark = json.loads(line)
        except ValueError:
            break  # the last line, torn by the stop
        if mark["out"] > size:
            break
        marks.append(mark)
        kept.append(line + b"\n")
    point = ResumePoint()
    if marks:
        last = marks[-1]
        _read_prefix(stream, last["end"], point.hasher, out_path)
        if point.hasher.hexdigest() != last["sha256"]:
            raise _different_input(out_path)
        point = ResumePoint(offset=last["end"], first_line=last["line"], written=last["lines"],
                            failed=last["failed"], hasher=point.hasher)  # fmt: skip
        start = last["out"]
    else:
        start = 0
    _skip_done_lines(out_path, start, size, stream, point)
    point.out_size = size
    records = Checkpoints(out_path, header, kept)
    if point.offset:
        records.add(end=point.offset, line=point.first_line, digest=point.hasher, out=size,
                    lines=point.written, failed=point.failed)  # fmt: skip
    return point, records


def _drop_torn_line(out_path: str) -> int:
    """Cut OUT after its last newline; return its size then."""
    try:
        with open(out_path, "r+b") as f:
            size = f.seek(0, os.SEEK_END)
            keep, step = size, 1 << 16
            while keep > 0:
                at = max(0, keep - step)
                f.seek(at)
                chunk = f.read(keep - at)
                newline = chunk.rfind(b"\n")
                if newline >= 0:
                    keep = at + newline + 1
                    break
                keep = at
            f.truncate(keep)
            return keep
    except FileNotFoundError:
        raise CliUsageError(
            f"nothing to resume: {out_path} is not there; run without --resume to start again"
        ) from None
    except OSError as exc:
        raise CliUsageError(f"cannot resume {out_path}: {exc.strerror or exc}") from None


def _read_prefix(stream: IO[bytes], size: int, hasher: Any, out_path: str) -> None:
    left = size
    while left > 0:
        data = stream.read(min(left, 1 << 20))
        if not data:
            raise _different_input(out_path)
        hasher.update(data)
        left -= len(data)


def _skip_done_lines(
    out_path: str, start: int, size: int, stream: IO[bytes], point: ResumePoint
) -> None:
    """Read past the input lines whose output OUT holds after its last checkpoint."""
    with open(out_path, "rb") as f:
        f.seek(start)
        done = [line for line in f.read(size - start).split(b"\n")[:-1]]
    for out_line in done:
        while True:
            raw = stream.readline()
            if not raw:
                raise _different_input(out_path)
            point.hasher.update(raw)
            point.offset += len(raw)
            point.first_line += 1
            if raw.strip():
                break
        point.written += 1
        point.failed += out_line.startswith(_ERROR_LINE)


def _different_input(out_path: str) -> CliUsageError:
    return CliUsageError(
        f"{out_path} was written for a different input (its first lines are not this "
        "input's); give the same INPUT to resume, or run without --resume to start again"
    )
