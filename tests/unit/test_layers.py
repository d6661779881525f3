"""Imports follow the layer table of the design, and packages meet only at their ``__all__``.

Every module of ``src/distproc`` is read (not run) for its imports, those
inside functions and under ``TYPE_CHECKING`` included:

* an import points down the layer table (:data:`LAYERS`), never up and never
  sideways into another package of the same layer; the command line reaches
  nothing below the managers and the task system (the ground modules, which
  every layer shares, excepted);
* across a package boundary, a module takes only names that the other
  module's (or package's) ``__all__`` lists, by ``from X import name`` or by
  ``module.name`` on a module it imported.  Inside a package, its modules may
  share more.
"""

from __future__ import annotations

import ast
import importlib
import types
from dataclasses import dataclass
from pathlib import Path

import distproc

SRC = Path(distproc.__file__).resolve().parent

#: The layer of each top-level part of distproc, from the ground up (``shared/DESIGN.md``).
LAYERS: dict[str, int] = {
    # The ground: imported by every layer, importing nothing above it.
    "_version": 0,
    "errors": 0,
    "addresses": 0,
    "spinning": 0,
    "callcontext": 0,
    "wire": 1,
    "server": 2,
    "client": 2,
    "proxies": 3,
    "managers": 4,
    "aio": 4,
    # The dashboard needs no code of the task system, only a server's status
    # report; the Executor hosts it (Executor(http=...)), so it sits below.
    "web": 5,
    "tasks": 6,
    "dropin": 6,
    "cli": 7,
    # The package's face, and ``python -m distproc``.
    "": 8,
    "__main__": 8,
    "run": 8,
}
#: What the command line may import: the layers from the managers up, and the ground.
CLI_REACHES = {layer for layer in LAYERS.values() if layer >= LAYERS["managers"] or layer == 0}


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    line: int
    target: str  # dotted module name imported from (or imported)
    name: str | None  # the name taken from it, None for the module itself

    def where(self) -> str:
        return f"{self.importer}:{self.line}"


def module_name(path: Path) -> str:
    parts = ["distproc", *path.relative_to(SRC).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def part(module: str) -> str:
    """The top-level part of distproc that ``module`` belongs to (``''``: the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def is_package(module: str) -> bool:
    return (SRC.joinpath(*module.split(".")[1:]) / "__init__.py").exists()


def is_module(module: str) -> bool:
    relative = module.split(".")[1:]
    return is_package(module) or SRC.joinpath(*relative).with_suffix(".py").exists()


def imports_of(path: Path) -> list[Import]:
    """Every import of a distproc name in ``path``, and every ``module.name`` use."""
    importer = module_name(path)
    package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[Import] = []
    #: Local names bound to distproc modules, for ``name.attr`` uses.
    modules: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "distproc":
                    found.append(Import(importer, node.lineno, alias.name, None))
                    if alias.asname:
                        modules[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "distproc":
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if is_module(submodule):
                    found.append(Import(importer, node.lineno, submodule, None))
                    modules[alias.asname or alias.name] = submodule
                else:
                    found.append(Import(importer, node.lineno, target, alias.name))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and not (node.attr.startswith("__") and node.attr.endswith("__"))
        ):
            target = modules[node.value.id]
            if not is_module(f"{target}.{node.attr}"):
                found.append(Import(importer, node.lineno, target, node.attr))
    return found


def all_imports() -> list[Import]:
    return [found for path in sorted(SRC.rglob("*.py")) for found in imports_of(path)]


def test_the_layer_table_names_every_part_of_the_package() -> None:
    parts = {part(module_name(path)) for path in SRC.rglob("*.py")}
    assert parts <= set(LAYERS), parts - set(LAYERS)


def test_imports_run_down_the_layer_table() -> None:
    wrong: list[str] = []
    for found in all_imports():
        mine, theirs = part(found.importer), part(found.target)
        if mine == theirs:
            continue
        if LAYERS[theirs] >= LAYERS[mine]:
            how = "up" if LAYERS[theirs] > LAYERS[mine] else "sideways"
            wrong.append(f"{found.where()} imports {found.target} ({how} the layer table)")
        elif mine == "cli" and LAYERS[theirs] not in CLI_REACHES:
            wrong.append(f"{found.where()} imports {found.target}, below the managers and tasks")
    assert wrong == []


def test_packages_meet_only_at_their_all() -> None:
    wrong: list[str] = []
    for found in all_imports():
        if found.name is None or part(found.importer) == part(found.target):
            continue
        exporter: types.ModuleType = importlib.import_module(found.target)
        exported = getattr(exporter, "__all__", None)
        if exported is None:
            wrong.append(f"{found.where()}: {found.target} has no __all__")
        elif found.name not in exported:
            wrong.append(f"{found.where()}: {found.name} is not in {found.target}.__all__")
    assert wrong == []
