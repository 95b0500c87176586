"""The pep8 task's corpus: the Python standard library of the running interpreter.

Test suites, site-packages, files that are not UTF-8 and files that do not compile are
excluded. Files are split into train / validation / test by a stable hash of their path
relative to the stdlib root (90 / 5 / 5), so the split is the same on every machine; the
manifest shipped in ``assets/split.json`` records the split this package was built with.
"""

from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path
from typing import Literal

Split = Literal["train", "validation", "test"]

EXCLUDED_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__", "testing"}

__all__ = ["Split", "stdlib_root", "split_of", "corpus_files", "read_corpus"]


def stdlib_root() -> Path:
    """The standard library folder of the running interpreter."""
    return Path(sysconfig.get_paths()["stdlib"])


def split_of(relative_path: str) -> Split:
    """Train / validation / test by a stable hash of the relative path (90 / 5 / 5)."""
    bucket = int(hashlib.sha256(relative_path.encode("utf-8")).hexdigest()[:8], 16) % 100
    return "test" if bucket < 5 else "validation" if bucket < 10 else "train"


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


def read_corpus(split: Split, root: Path | None = None) -> list[tuple[str, str]]:
    """``(relative path, source)`` of a split: UTF-8 files that compile."""
    docs = []
    for rel, path in corpus_files(split, root):
        try:
            text = path.read_bytes().decode("utf-8")
            compile(text, rel, "exec", dont_inherit=True)
        except (UnicodeDecodeError, SyntaxError, ValueError):
            continue
        docs.append((rel, text))
    return docs


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
