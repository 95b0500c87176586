"""MetricsWriter: rows appended on the main process, trimmed to a checkpoint on resume."""

from __future__ import annotations

import json

from tokenalign.utils.metrics import MetricsWriter


def test_append_and_rows_round_trip(tmp_path):
    log = MetricsWriter(tmp_path / "sub" / "metrics.jsonl")
    assert not log.exists() and log.rows() == []
    log.append({"iteration": 0, "eval_x": 1.5})
    log.append({"iteration": 1, "reward": -0.25, "note": "é"})
    assert log.exists()
    assert log.rows() == [{"iteration": 0, "eval_x": 1.5}, {"iteration": 1, "reward": -0.25, "note": "é"}]


def test_other_processes_write_nothing(tmp_path):
    path = tmp_path / "metrics.jsonl"
    MetricsWriter(path, is_main_process=False).append({"iteration": 0})
    assert not path.exists()
    path.write_text(json.dumps({"iteration": 5}) + "\n")
    MetricsWriter(path, is_main_process=False).trim(0)
    assert MetricsWriter(path).rows() == [{"iteration": 5}]


def test_trim_drops_rows_after_the_checkpoint_and_keeps_the_rest_byte_for_byte(tmp_path):
    path = tmp_path / "metrics.jsonl"
    kept = ['{"iteration": 0, "eval_a": 1}\n', '{"note": "no iteration: counts as 0"}\n', '{"iteration":2,"x":  3}\n']
    path.write_text(kept[0] + kept[1] + "\n" + '{"iteration": 3, "x": 4}\n' + kept[2] + '{"iteration": 4}\n')
    MetricsWriter(path).trim(keep_through_iteration=2)
    assert path.read_text() == "".join(kept)  # blank lines go, kept lines are untouched
    MetricsWriter(path).trim(keep_through_iteration=-1)
    assert path.read_text() == ""


def test_trim_of_a_missing_file_is_a_no_op(tmp_path):
    log = MetricsWriter(tmp_path / "none.jsonl")
    log.trim(3)
    assert not log.exists()


def test_trim_is_atomic(tmp_path, monkeypatch):
    """A failure while rewriting leaves the file as it was."""
    import pytest

    import tokenalign.utils.io as io

    path = tmp_path / "metrics.jsonl"
    text = '{"iteration": 1}\n{"iteration": 2}\n'
    path.write_text(text)

    def broken_fsync(fd):
        raise OSError("disk gone")

    monkeypatch.setattr(io.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        MetricsWriter(path).trim(1)
    assert path.read_text() == text
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temporary left behind
