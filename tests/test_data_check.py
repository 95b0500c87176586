"""``tokenalign data check``: counts, statistics, one line per problem, exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokenalign.cli import main
from tokenalign.data.check import check_file, length_stats

HH = "hh-rlhf-harmless-base-test-200.jsonl"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_length_stats_hand_computed():
    assert length_stats([3, 1, 2, 10]) == {"min": 1, "mean": 4.0, "median": 2.5, "max": 10}
    assert length_stats([]) == {}


def test_clean_real_file_exits_0(data_dir, capsys):
    assert main(["data", "check", str(data_dir / HH), "--format", "pairs"]) == 0
    out = capsys.readouterr().out
    assert "records read │ 200" in out and "valid        │ 200" in out and "invalid      │   0" in out
    assert "lengths in characters" in out
    assert "clean: 200 valid records" in out
    # HH-RLHF line 87 has an empty final reply: a warning, which does not fail the check.
    assert f"{data_dir / HH}:87: field 'chosen': the last reply is empty" in out


def test_problems_are_listed_one_per_line_and_exit_1(tmp_path, capsys):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "p", "chosen": "abcd", "rejected": "ab"},
        {"prompt": "p", "chosen": "", "rejected": "b"},
        "not json",
        {"prompt": "pp", "chosen": "abcdef", "rejected": "abcdef"},
    ])
    assert main(["data", "check", str(path), "--format", "pairs"]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert f"{path}:2: field 'chosen': is empty" in lines
    assert f"{path}:3: malformed JSON (Expecting value at column 1)" in lines
    assert f"{path}:4: field 'rejected': is identical to 'chosen' (no preference signal)" in lines
    assert "2 invalid of 4 records" in out
    # Character statistics over the 2 valid records: chosen 4 and 6, rejected 2 and 6.
    row = next(line for line in lines if line.startswith("│ chosen"))
    assert [c.strip() for c in row.split("│")[2:6]] == ["4", "5.0", "5", "6"]
    row = next(line for line in lines if line.startswith("│ rejected"))
    assert [c.strip() for c in row.split("│")[2:6]] == ["2", "4.0", "4", "6"]


def test_max_problems_limits_the_listing(tmp_path, capsys):
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": ""}] * 5 + [{"text": "ok"}])
    assert main(["data", "check", str(path), "--format", "text", "--max-problems", "2"]) == 1
    out = capsys.readouterr().out
    assert f"{path}:1: field 'text': is empty" in out and f"{path}:2: field 'text': is empty" in out
    assert f"{path}:3:" not in out
    assert "... and 3 more problems" in out


def test_ranked_k_distribution_and_ties(tmp_path, capsys):
    path = write_jsonl(tmp_path / "r.jsonl", [
        {"prompt": "p", "responses": ["a", "b"], "scores": [1, 0]},
        {"prompt": "p", "responses": ["a", "b", "c"], "scores": [1, 1, 0]},
        {"prompt": "p", "responses": ["a", "b", "c"], "scores": [2, 2, 2]},
        {"prompt": "p", "responses": ["a", "b", "c", "d"], "scores": [4, 3, 2, 1]},
    ])
    report = check_file(str(path), "ranked")
    assert report.k_counts == {2: 1, 3: 2, 4: 1} and report.n_lists_with_ties == 2
    assert report.char_stats["responses"] == {"min": 1, "mean": 1.0, "median": 1, "max": 1}
    assert main(["data", "check", str(path), "--format", "ranked"]) == 0
    out = capsys.readouterr().out
    assert "K=2: 1, K=3: 2, K=4: 1" in out
    assert "lists with tied scores" in out
    assert f"{path}:3: field 'scores': all 3 scores are tied (no preference signal)" in out


def test_field_map_option(tmp_path, capsys):
    path = write_jsonl(tmp_path / "q.jsonl", [{"question": "q", "answer": "a"}])
    assert main(["data", "check", str(path), "--format", "supervised"]) == 1
    assert f"{path}:1: field 'prompt': missing" in capsys.readouterr().out
    args = ["data", "check", str(path), "--format", "supervised", "--field-map", "prompt=question",
            "--field-map", "completion=answer"]
    assert main(args) == 0


def test_token_lengths_and_over_length_count(tmp_path, tiny_tokenizer, capsys):
    # In the tiny tokenizer "~" is one token each (no merges): prompt 2 tokens, responses
    # 4 and 2; the first pair (2 + 4 = 6) is over 5 tokens, the second (2 + 2) is not.
    tok_dir = tmp_path / "tok"
    tiny_tokenizer.save_pretrained(tok_dir)
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "~~", "chosen": "~~~~", "rejected": "~~"},
        {"prompt": "~~", "chosen": "~~", "rejected": "~"},
    ])
    report = check_file(str(path), "pairs", tokenizer=tiny_tokenizer, max_length=5)
    assert report.n_over_length == 1
    assert report.token_stats["chosen"] == {"min": 2, "mean": 3.0, "median": 3.0, "max": 4}
    assert report.token_stats["rejected"] == {"min": 1, "mean": 1.5, "median": 1.5, "max": 2}
    args = ["data", "check", str(path), "--format", "pairs", "--tokenizer", str(tok_dir), "--max-length", "5"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "lengths in tokens" in out
    assert "longer than 5 tokens (would be truncated) │ 1" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["MISSING.jsonl", "--format", "pairs"], "MISSING.jsonl: no such file or folder"),
        (["{tmp}/x.txt", "--format", "pairs"], "cannot tell the file format from the extension '.txt'"),
        (["{tmp}/x.txt", "--format", "pairs", "--file-format", "csv"], "x.txt: holds no records"),
        (["{tmp}/ok.jsonl", "--format", "prompts", "--max-length", "5"], "--max-length needs --tokenizer"),
        (["{tmp}/ok.jsonl", "--format", "prompts", "--tokenizer", "{tmp}/none"], "is not a folder"),
        (["{tmp}/ok.jsonl", "--format", "prompts", "--field-map", "prompt"], "must look like FIELD=COLUMN"),
        (["{tmp}/ok.jsonl", "--format", "prompts", "--field-map", "text=prompt"], "not a field of 'prompts'"),
    ],
)
def test_unreadable_sources_and_bad_options_exit_2(tmp_path, capsys, args, message):
    (tmp_path / "x.txt").write_text("prompt\n")
    write_jsonl(tmp_path / "ok.jsonl", [{"prompt": "p"}])
    argv = ["data", "check", *(a.replace("{tmp}", str(tmp_path)) for a in args)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tokenalign data: error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_help_explains_formats_and_fields(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["data", "check", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for text in ("pairs", "prompt, chosen (the preferred response), rejected", "ranked", "K >= 2", "edits",
                 "original (the worse response), edited (its minimal edit)", "supervised  prompt, completion",
                 "text        text", '"\\n\\nAssistant:"', "exit status: 0 clean, 1 problems found, 2",
                 "--field-map", "--tokenizer", "--max-length", "--max-problems", ".parquet", "save_to_disk"):
        assert text in out, text


def test_data_without_subcommand_prints_help(capsys):
    assert main(["data"]) == 2
    assert "check" in capsys.readouterr().out
