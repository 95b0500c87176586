"""The command line: help, one-line errors, exit codes of `data check`, config printing."""

from __future__ import annotations

import json

import pytest
import yaml

from tokenalign.cli import COMMAND_MODULES, main


def test_help_lists_every_command(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in COMMAND_MODULES:
        assert name in out


@pytest.mark.parametrize("name", COMMAND_MODULES)
def test_each_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    assert len(capsys.readouterr().out) > 200


def test_data_check_exit_codes(tmp_path, data_dir, capsys):
    assert main(["data", "check", str(data_dir / "hh-rlhf-harmless-base-test-200.jsonl"), "--format", "pairs"]) == 0
    assert "clean" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n" + '{"prompt": 1}\n')
    assert main(["data", "check", str(bad), "--format", "pairs"]) == 1
    out = capsys.readouterr().out
    assert "bad.jsonl:2: field 'prompt': must be a string" in out.replace("\n", "")
    assert main(["data", "check", str(tmp_path / "missing.jsonl"), "--format", "pairs"]) == 2
    err = capsys.readouterr().err
    assert "missing.jsonl: no such file" in err and "Traceback" not in err


def test_data_check_with_tokenizer_counts_over_long(tmp_path, tiny_tokenizer, capsys):
    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"prompt": "p", "responses": ["short", "a much longer response " * 5], "scores": [1, 1]}) + "\n")
    assert main(["data", "check", str(path), "--format", "ranked", "--tokenizer", str(tmp_path / "tok"), "--max-length", "10"]) == 0
    out = capsys.readouterr().out
    assert "lengths in tokens" in out and "lists with tied scores" in out


def test_config_prints_defaults_and_rejects_unknown_keys(capsys):
    assert main(["config", "reward", "--set", "data.train=x.jsonl", "--set", "learn.lr=1e-4"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["learn"]["lr"] == 1e-4 and cfg["data"]["train"] == "x.jsonl"
    assert main(["config", "reward", "--set", "data.train=x", "--set", "learn.lrr=1"]) == 2
    assert "unknown config key 'learn.lrr' (did you mean lr?)" in capsys.readouterr().err
