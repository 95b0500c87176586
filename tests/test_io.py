"""Atomic writes leave either the old file or the new one, never a partial one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenalign.utils.io import append_jsonl, atomic_path, atomic_write_json, atomic_write_text


def test_atomic_write_replaces_and_leaves_no_temporaries(tmp_path: Path):
    target = tmp_path / "sub" / "f.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]


def test_failed_write_keeps_the_old_file(tmp_path: Path):
    target = tmp_path / "f.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("crash mid-write")
    assert target.read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_atomic_directory_swap(tmp_path: Path):
    target = tmp_path / "ckpt"
    for step in (1, 2):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "step.txt").write_text(str(step))
    assert (target / "step.txt").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_append_jsonl(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    append_jsonl(path, {"step": 1})
    append_jsonl(path, {"step": 2})
    assert path.read_text().splitlines() == ['{"step": 1}', '{"step": 2}']
