"""The pep8 task's corpus: the Python standard library of the running interpreter.

Test suites, site-packages, files that are not UTF-8 and files that do not compile are
excluded. Files are split into train / validation / test by a stable hash of their path
relative to the stdlib root (90 / 5 / 5), so the split is the same on every machine; the
manifest shipped in ``assets/split.json`` records the split this package was built with.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import sysconfig
import textwrap
from pathlib import Path
from typing import Literal

Split = Literal["train", "validation", "test"]

EXCLUDED_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__", "testing"}

__all__ = ["Split", "stdlib_root", "split_of", "hash_split", "shipped_split", "corpus_files", "read_corpus", "split_manifest", "dedented_methods"]


def stdlib_root() -> Path:
    """The standard library folder of the running interpreter."""
    return Path(sysconfig.get_paths()["stdlib"])


def hash_split(relative_path: str) -> Split:
    """Train / validation / test by a stable hash of the relative path (90 / 5 / 5)."""
    bucket = int(hashlib.sha256(relative_path.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "test" if bucket < 5 else "validation" if bucket < 10 else "train"


@functools.lru_cache(maxsize=1)
def shipped_split() -> dict[str, Split]:
    """File -> split of the shipped manifest (``assets/split.json``); empty if it is absent."""
    path = Path(__file__).parent / "assets" / "split.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))["files"]


def split_of(relative_path: str) -> Split:
    """The split of a file: the shipped manifest's, else (a file another Python version
    has) the same hash rule the manifest was built with."""
    return shipped_split().get(relative_path) or hash_split(relative_path)


def _excluded(rel: Path) -> bool:
    parts = rel.parts[:-1]
    return any(p in EXCLUDED_DIRS or p.startswith("test_") for p in parts) or rel.name.startswith("test_")


def corpus_files(split: Split | None = None, root: Path | None = None) -> list[tuple[str, Path]]:
    """``(relative path, absolute path)`` of the usable files, sorted, optionally of one split."""
    root = root or stdlib_root()
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if _excluded(rel):
            continue
        if split is not None and split_of(rel.as_posix()) != split:
            continue
        out.append((rel.as_posix(), path))
    return out


def _compiles(text: str) -> bool:
    try:
        compile(text, "<corpus>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    return True


def read_corpus(split: Split, root: Path | None = None) -> list[tuple[str, str]]:
    """``(relative path, source)`` of a split: UTF-8 files that compile."""
    return list(_read_corpus(split, root or stdlib_root()))


@functools.lru_cache(maxsize=8)
def _read_corpus(split: Split, root: Path) -> tuple[tuple[str, str], ...]:
    # Cached: compiling every file takes seconds, and a process reads a split repeatedly.
    docs = []
    for rel, path in corpus_files(split, root):
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            continue
        if _compiles(text):
            docs.append((rel, text))
    return tuple(docs)


def split_manifest(tokenizer=None, root: Path | None = None) -> dict:
    """The split (file -> split) and per-split statistics: files, characters, lines, tokens."""
    import platform

    manifest: dict = {"python": platform.python_version(), "rule": "sha256(relative path) % 100: <5 test, <10 validation", "splits": {}, "files": {}}
    for split in ("train", "validation", "test"):
        docs = read_corpus(split, root)
        stats = {"files": len(docs), "characters": sum(len(t) for _, t in docs), "lines": sum(t.count("\n") for _, t in docs)}
        if tokenizer is not None:
            stats["tokens"] = sum(len(ids) for ids in tokenizer([t for _, t in docs], add_special_tokens=False)["input_ids"])
        manifest["splits"][split] = stats
        manifest["files"].update({rel: split for rel, _ in docs})
    return manifest


def dedented_methods(source: str) -> list[str]:
    """Every indented function of ``source`` (methods, nested functions) dedented to column 0.

    The task's prompts are such dedented headers; pretraining on these extra documents
    shows the model a method at column 0 with its body at 4 spaces, the shape it must
    complete. Decorators are kept; a function whose text cannot be dedented (a
    multi-line string at column 0 inside it) is skipped.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    lines = source.splitlines(keepends=True)
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or not node.col_offset:
            continue
        start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
        text = textwrap.dedent("".join(lines[start : node.end_lineno]))
        if text[:1].strip() and _compiles(text):
            out.append(text)
    return out
