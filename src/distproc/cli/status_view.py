"""How ``distproc status`` draws a status report on a terminal (with rich).

The report is the dict of the server method ``status`` (see
:meth:`distproc.server.core.Server.status`): the manager's objects and
clients, then one section per service it hosts.  A task service
(``"kind": "tasks"``) is drawn as its counts, its workers, the functions
that workers could not import (quarantined there) and its dead letters; a
service of another kind is shown as its data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.pretty import Pretty
from rich.table import Table
from rich.text import Text

__all__ = ["MAX_ROWS", "duration", "render"]

#: Rows shown per table; ``--json`` has them all.
MAX_ROWS = 30


def duration(seconds: Any) -> str:
    """``4.2s``, ``3m12s``, ``2h05m``, ``3d04h``; ``-`` for nothing."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def _table(
    title: str,
    columns: Sequence[tuple[str, str]],
    rows: Iterable[Sequence[Any]],
    total: int,
) -> RenderableType:
    """A table of at most MAX_ROWS rows; ``columns`` are (header, justify) pairs."""
    shown = list(rows)[:MAX_ROWS]
    table = Table(title=f"{title} ({total})", title_justify="left", title_style="bold")
    for header, justify in columns:
        table.add_column(header, justify=justify)  # type: ignore[arg-type]  # "left"/"right"
    for row in shown:
        table.add_row(*(_text(cell) for cell in row))
    if total <= len(shown):
        return table
    return Group(table, Text(f"... {total - len(shown)} more; --json lists them all", "dim"))


def _header(report: Mapping[str, Any]) -> Text:
    text = Text()
    services = report.get("services") or []
    hosts_tasks = any(isinstance(x, Mapping) and x.get("kind") == "tasks" for x in services)
    text.append("distproc task service" if hosts_tasks else "distproc manager", style="bold")
    text.append(f" at {report.get('address', '?')}")
    if report.get("pid") is not None:
        text.append(f" · pid {report['pid']}")
    if report.get("uptime") is not None:
        text.append(f" · up {duration(report['uptime'])}")
    return text


def _objects(objects: Sequence[Mapping[str, Any]], with_repr: bool) -> RenderableType:
    if with_repr:
        columns = [("id", "right"), ("refcount", "right"), ("object", "left")]
        rows = ([o.get("id"), o.get("refcount"), o.get("repr")] for o in objects)
    else:
        columns = [("id", "right"), ("typeid", "left"), ("refcount", "right")]
        rows = ([o.get("id"), o.get("typeid"), o.get("refcount")] for o in objects)
    return _table("Objects", columns, rows, len(objects))


def _clients(clients: Sequence[Mapping[str, Any]]) -> RenderableType:
    rows = ([c.get("peer"), c.get("protocol"), duration(c.get("connected_for"))] for c in clients)
    columns = [("peer", "left"), ("protocol", "left"), ("connected for", "right")]
    return _table("Clients", columns, rows, len(clients))


#: A backend's capabilities (see :class:`distproc.tasks.backends.Capabilities`) as guarantees.
#: (``durable``, when false, is the warning "lost when the service stops".)
_GUARANTEES = {
    "instant_requeue": "a lost worker's tasks requeued at once",
    "multi_host": "one state for services on several hosts",
}


def _store(store: Mapping[str, Any]) -> Text:
    """``Store  sqlite /var/lib/tasks.db · 1.2 MiB · schema 1 · sync full``, or ``memory · lost
    when the service stops``, then the guarantees its backend declares it cannot keep."""
    text = Text()
    text.append("Store", style="bold")
    text.append(f"  {store.get('backend', '?')}")
    if store.get("path"):
        text.append(f" {store['path']}")
    size = store.get("size")
    if isinstance(size, int):
        text.append(f" · {size / 1048576:.1f} MiB")
    if store.get("schema") is not None:
        text.append(f" · schema {store['schema']}")
    if store.get("sync"):
        text.append(f" · sync {store['sync']}")
    capabilities = store.get("capabilities")
    if isinstance(capabilities, Mapping):
        if capabilities.get("durable") is False:
            text.append(" · lost when the service stops", style="yellow")
        lacking = [_GUARANTEES[k] for k in _GUARANTEES if capabilities.get(k) is False]
        if lacking:
            text.append(f" · not guaranteed: {'; '.join(lacking)}", style="dim")
    return text


def _tasks(service: Mapping[str, Any]) -> list[RenderableType]:
    counts = service.get("tasks") or {}
    summary = Text()
    summary.append("Tasks", style="bold")
    for name in ("queued", "leased", "done", "failed", "dead"):
        style = "red" if name in ("failed", "dead") and counts.get(name) else ""
        summary.append(f"  {name} ")
        summary.append(_text(counts.get(name)), style=style or "bold")
    rate = service.get("throughput_1m")
    if isinstance(rate, (int, float)):
        summary.append(f"  · {rate:.1f} tasks/s over the last minute")
    masters = service.get("masters")
    if masters is not None:
        summary.append(f"  · {masters} master{'s' if masters != 1 else ''}")
    workers = service.get("workers") or []
    worker_rows = (
        [
            w.get("id"),
            w.get("host"),
            w.get("pid"),
            w.get("slots"),
            w.get("done"),
            w.get("leased"),
            duration(w.get("oldest_running")),
            duration(w.get("connected_for")),
        ]
        for w in workers
    )
    worker_columns = [
        ("id", "left"),
        ("host", "left"),
        ("pid", "right"),
        ("slots", "right"),
        ("done", "right"),
        ("running", "right"),
        ("oldest running", "right"),
        ("connected for", "right"),
    ]
    parts: list[RenderableType] = [summary]
    store = service.get("store")
    if isinstance(store, Mapping):
        parts.append(_store(store))
    parts.append(_table("Workers", worker_columns, worker_rows, len(workers)))
    quarantined = [
        [w.get("id"), q.get("function"), q.get("error")]
        for w in workers
        for q in w.get("quarantined") or []
        if isinstance(q, Mapping)
    ]
    if quarantined:
        columns = [("worker", "left"), ("function", "left"), ("cannot import it", "left")]
        parts.append(_table("Quarantined", columns, quarantined, len(quarantined)))
    dead = service.get("dead_letters") or []
    if dead:
        dead_rows = ([d.get("task"), d.get("function"), d.get("reason")] for d in dead)
        dead_columns = [("task", "right"), ("function", "left"), ("reason", "left")]
        parts.append(_table("Dead letters", dead_columns, dead_rows, len(dead)))
    return parts


def render(report: Mapping[str, Any]) -> RenderableType:
    """The whole report: header, services (tasks first), objects and clients."""
    parts: list[RenderableType] = [_header(report)]
    fallback = report.get("fallback")
    if fallback:
        parts.append(Text(str(report.get("note", "")), style="yellow"))
    for service in report.get("services") or []:
        if isinstance(service, Mapping) and service.get("kind") == "tasks":
            parts.extend(_tasks(service))
        else:
            parts.append(Pretty(service))
    objects = report.get("objects")
    if objects is not None:
        parts.append(_objects(objects, with_repr=bool(fallback)))
    clients = report.get("clients")
    if clients is not None:
        parts.append(_clients(clients))
    return Group(*parts)
