"""The package's layering, checked on the source with ``ast`` (docs/architecture.md).

- ``tokenalign.jobs`` is the top layer: only ``commands/``, ``cli.py``, ``__main__.py`` and
  the package's ``__init__`` (the Python API) import it (function-local imports count too);
- the top-level subpackages (``policy``, ``rewards``, ``rollout``, ...; a top-level module
  such as ``config.py`` is its own node) import each other without a cycle;
- nobody imports another package's private names (``from tokenalign.x import _name``).
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

import tokenalign

PACKAGE = "tokenalign"
SRC = Path(tokenalign.__file__).parent
# What may import the job layer: the CLI on top of it, and the package's own ``__init__``
# (the Python API, ``tokenalign.Trainer``, imported lazily).
JOB_USERS = ("tokenalign.jobs", "tokenalign.commands", "tokenalign.cli", "tokenalign.__main__")
JOB_ROOT = "tokenalign"


@dataclasses.dataclass(frozen=True)
class Import:
    """One ``tokenalign`` import: the importing module, the imported module, and the names
    taken from it (``from m import a, b``; empty for ``import m``)."""

    importer: str
    module: str
    names: tuple[str, ...]
    line: int


def module_name(path: Path, root: Path) -> str:
    """``root/policy/trainer.py`` -> ``tokenalign.policy.trainer`` (a package: its folder)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


def imports_of(source: str, importer: str, is_package: bool = False) -> list[Import]:
    """Every ``tokenalign`` import in ``source``, at any depth (function-local ones too);
    relative imports are resolved against ``importer``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(importer, alias.name, (), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = importer.split(".") if is_package else importer.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            found.append(Import(importer, module, tuple(alias.name for alias in node.names), node.lineno))
    return [i for i in found if i.module == PACKAGE or i.module.startswith(PACKAGE + ".")]


def package_imports(root: Path = SRC) -> list[Import]:
    """The imports of every module of the package under ``root``."""
    out = []
    for path in sorted(root.rglob("*.py")):
        out += imports_of(path.read_text(encoding="utf-8"), module_name(path, root), path.name == "__init__.py")
    return out


def top_level(module: str, root: Path = SRC) -> str | None:
    """``tokenalign.policy.trainer`` -> ``policy``; None for the root package itself."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    return parts[1] if (root / parts[1]).is_dir() or (root / f"{parts[1]}.py").is_file() else None


def imported_modules(imp: Import, root: Path = SRC) -> list[str]:
    """The modules an import reaches: ``from tokenalign import jobs`` reaches ``tokenalign.jobs``."""
    if imp.module == PACKAGE:
        return [f"{PACKAGE}.{name}" for name in imp.names if top_level(f"{PACKAGE}.{name}", root)]
    return [imp.module]


def job_layer_violations(imports: list[Import], root: Path = SRC) -> list[str]:
    return [f"{i.importer}:{i.line} imports {target}" for i in imports for target in imported_modules(i, root)
            if top_level(target, root) == "jobs" and i.importer != JOB_ROOT
            and not any(i.importer == user or i.importer.startswith(user + ".") for user in JOB_USERS)]


def package_graph(imports: list[Import], root: Path = SRC) -> dict[str, dict[str, list[str]]]:
    """Top-level package -> the packages it imports -> which imports make that edge."""
    graph: dict[str, dict[str, list[str]]] = {}
    for i in imports:
        source = top_level(i.importer, root)
        for target in imported_modules(i, root):
            dest = top_level(target, root)
            if source is not None and dest is not None and dest != source:
                graph.setdefault(source, {}).setdefault(dest, []).append(f"{i.importer}:{i.line} imports {target}")
    return graph


def find_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    """One cycle of the graph as ``[a, b, ..., a]``, or None when it has none."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if nxt in path:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in done:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def describe_cycle(cycle: list[str], graph: dict[str, dict[str, list[str]]]) -> str:
    edges = [f"  {a} -> {b}: " + "; ".join(graph[a][b]) for a, b in zip(cycle, cycle[1:])]
    return "import cycle " + " -> ".join(cycle) + "\n" + "\n".join(edges)


def private_violations(imports: list[Import], root: Path = SRC) -> list[str]:
    return [f"{i.importer}:{i.line} imports {name} from {i.module}" for i in imports for name in i.names
            if name.startswith("_") and not name.startswith("__") and top_level(i.importer, root) != top_level(i.module, root)]


def test_only_the_cli_imports_the_job_layer():
    assert job_layer_violations(package_imports()) == []


def test_no_import_cycle_between_packages():
    graph = package_graph(package_imports())
    cycle = find_cycle(graph)
    assert cycle is None, describe_cycle(cycle, graph)


def test_no_private_names_imported_across_packages():
    assert private_violations(package_imports()) == []


@pytest.fixture()
def fake_package(tmp_path):
    """A small package laid out like the real one (empty modules), with ``files`` written
    into it; returns its imports and its root. Each call starts from empty modules."""

    def make(files: dict[str, str]) -> tuple[list[Import], Path]:
        root = tmp_path / PACKAGE
        for rel in ("__init__.py", "cli.py", "jobs/__init__.py", "jobs/train.py", "commands/__init__.py", "commands/train.py",
                    "policy/__init__.py", "policy/trainer.py", "rollout/__init__.py", "rollout/generate.py"):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text("")
        for rel, text in files.items():
            (root / rel).write_text(text)
        return package_imports(root), root

    return make


def test_the_checks_catch_what_they_are_for(fake_package):
    """An upward import (also function-local), a cycle and a private reach-in each fail."""
    imports, root = fake_package({
        "commands/train.py": "from tokenalign.jobs.train import run_train\n",  # allowed
        "jobs/train.py": "from ..policy import trainer\n",  # relative: tokenalign.policy
        "policy/trainer.py": "def f():\n    from tokenalign.jobs import train\n    from tokenalign.rollout.generate import _x\n",
    })
    assert job_layer_violations(imports, root) == ["tokenalign.policy.trainer:2 imports tokenalign.jobs"]
    assert private_violations(imports, root) == ["tokenalign.policy.trainer:3 imports _x from tokenalign.rollout.generate"]
    graph = package_graph(imports, root)
    assert graph["jobs"] == {"policy": ["tokenalign.jobs.train:1 imports tokenalign.policy"]}
    assert find_cycle(graph) == ["jobs", "policy", "jobs"]  # an upward import closes a cycle, too

    imports, root = fake_package({"policy/trainer.py": "from tokenalign.rollout.generate import generate\n",
                                  "rollout/generate.py": "def f():\n    from tokenalign import policy\n"})
    graph = package_graph(imports, root)
    assert find_cycle(graph) == ["policy", "rollout", "policy"]
    assert describe_cycle(["policy", "rollout", "policy"], graph) == (
        "import cycle policy -> rollout -> policy\n"
        "  policy -> rollout: tokenalign.policy.trainer:1 imports tokenalign.rollout.generate\n"
        "  rollout -> policy: tokenalign.rollout.generate:2 imports tokenalign.policy")

    clean, root = fake_package({"policy/trainer.py": "from tokenalign.rollout.generate import generate\n"})
    assert job_layer_violations(clean, root) == [] and find_cycle(package_graph(clean, root)) is None


# Private attributes that may be read on objects that are not ``self``: other libraries'
# internals that tokenalign has no public way to reach (accelerate's shared state).
# accelerate's process-state reset, and the two TRL hooks the TRL bridge overrides (their
# super() call: TRL has no public hook for per-token advantages)
FOREIGN_PRIVATE = {("utils/accel.py", "_shared_state"), ("utils/accel.py", "_reset_state"),
                   ("integrations/trl.py", "_generate_and_score_completions"), ("integrations/trl.py", "_generate_single_turn"),
                   # the bf16 weight swap for one sampling batch: a Linear's registered parameter slot
                   ("utils/kernels.py", "_parameters"),
                   # torch's oneDNN linear on a prepacked bf16 weight (the ops torch's inductor
                   # calls for CPU linears when it freezes weights), behind a support check
                   ("utils/kernels.py", "_linear_pointwise"), ("utils/kernels.py", "_is_mkldnn_bf16_supported"),
                   ("utils/kernels.py", "_reorder_linear_weight")}


def private_attribute_uses(root: Path = SRC) -> list[str]:
    """``obj._name`` on anything but ``self``/``cls`` (a part reaching into its owner)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if (rel, node.attr) not in FOREIGN_PRIVATE:
                found.append(f"{rel}:{node.lineno}: .{node.attr}")
    return found


def test_no_private_attributes_of_other_objects():
    assert private_attribute_uses() == []


def test_private_attribute_check_catches_a_part_reaching_into_its_owner(tmp_path):
    (tmp_path / "hook.py").write_text("def fn(trainer, batch):\n    return trainer._ref_logprobs(batch), self._ok\n")
    assert private_attribute_uses(tmp_path) == ["hook.py:2: ._ref_logprobs"]
