"""The pep8 corpus: exclusions, the pinned split rule, the shipped manifest, method documents."""

from __future__ import annotations

import json
import platform

import pytest

from tokenalign.tasks.pep8 import ASSETS
from tokenalign.tasks.pep8.corpus import (
    corpus_files,
    dedented_methods,
    hash_split,
    read_corpus,
    shipped_split,
    split_of,
)
from tokenalign.tasks.pep8.prompts import extract_headers, load_prompts


def test_hash_rule_is_pinned():
    # sha256("ast.py")[:8] % 100 == 0 -> test; "os.py" -> 56 -> train; "mod9.py" -> validation.
    # Changing the rule would silently move files between splits on other Python versions.
    assert hash_split("ast.py") == "test"
    assert hash_split("os.py") == "train"
    assert hash_split("mod9.py") == "validation"


def test_excluded_paths_and_unusable_files(tmp_path):
    files = {
        "a.py": "x = 1\n",
        "pkg/__init__.py": "",
        "pkg/mod.py": "def f():\n    return 1\n",
        "test/t.py": "x = 1\n",
        "pkg/tests/t.py": "x = 1\n",
        "idlelib/idle_test/t.py": "x = 1\n",
        "site-packages/p.py": "x = 1\n",
        "test_top.py": "x = 1\n",
        "pkg/test_support/t.py": "x = 1\n",
        "broken.py": "def f(:\n",
        "notes.txt": "not python\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    (tmp_path / "latin1.py").write_bytes("s = 'caf\xe9'\n".encode("latin-1"))
    listed = {rel for rel, _ in corpus_files(root=tmp_path)}
    assert listed == {"a.py", "pkg/__init__.py", "pkg/mod.py", "broken.py", "latin1.py"}
    read = {rel for split in ("train", "validation", "test") for rel, _ in read_corpus(split, tmp_path)}
    assert read == {"a.py", "pkg/__init__.py", "pkg/mod.py"}  # not UTF-8 / not compiling: out


def test_shipped_manifest_matches_rule_and_statistics():
    manifest = json.loads((ASSETS / "split.json").read_text(encoding="utf-8"))
    files = manifest["files"]
    assert files == shipped_split()
    assert all(hash_split(rel) == split for rel, split in files.items())
    for split, stats in manifest["splits"].items():
        assert stats["files"] == sum(1 for s in files.values() if s == split)
    assert manifest["splits"]["train"]["files"] > 0.85 * len(files)
    assert min(manifest["splits"][s]["files"] for s in ("validation", "test")) >= 20
    # A file the manifest does not know (another Python version) follows the same rule.
    assert split_of("not/in/manifest_9.py") == hash_split("not/in/manifest_9.py")


@pytest.mark.skipif(
    platform.python_version() != json.loads((ASSETS / "split.json").read_text())["python"],
    reason="the manifest lists the files of the Python version it was built with",
)
def test_running_interpreter_gives_the_shipped_split():
    docs = {rel: split for split in ("train", "validation", "test") for rel, _ in read_corpus(split)}
    assert docs == shipped_split()


def test_prompts_come_from_held_out_splits_and_parse():
    test_files = [t for _, t in read_corpus("test")]
    test_prompts = load_prompts("test")
    assert load_prompts("test", limit=3) == test_prompts[:3]
    for p in test_prompts[:50]:
        assert any(p.splitlines()[0] in t for t in test_files)
    for p in load_prompts("train") + test_prompts:
        compile(p + "\n    pass\n", "<prompt>", "exec")


def test_dedented_methods():
    source = (
        "def top():\n    return 1\n\n"
        "class A:\n"
        "    @property\n"
        "    def x(self):\n"
        "        def inner():\n"
        "            return 2\n"
        "        return inner()\n\n"
        "    def doc(self):\n"
        '        s = """\nflush left\n"""\n'
        "        return s\n"
    )
    assert dedented_methods(source) == [
        "@property\ndef x(self):\n    def inner():\n        return 2\n    return inner()\n",
        "def inner():\n    return 2\n",
    ]  # top() is already at column 0; doc() cannot be dedented (string at column 0)
    assert dedented_methods("def f(:\n") == []


def test_header_stops_before_a_decorated_first_statement():
    source = "def outer(x):\n    @wrap(x)\n    def inner():\n        pass\n    return inner\n"
    assert extract_headers(source) == ["def outer(x):", "def inner():"]
