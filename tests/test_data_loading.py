"""Loaders: every format and source, and one clear error per kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokenalign.data import load_records
from tokenalign.data.records import split_shared_prefix
from tokenalign.errors import DataError

HH = "hh-rlhf-harmless-base-test-200.jsonl"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_real_hh_rlhf_pairs_split_the_shared_dialogue(data_dir):
    result = load_records(data_dir / HH, "pairs")
    assert result.n_read == len(result.records) == 200 and not result.problems
    first = result.records[0]
    raw = json.loads((data_dir / HH).read_text().splitlines()[0])
    assert first.prompt.endswith("\n\nAssistant:")
    assert first.prompt + first.chosen == raw["chosen"]
    assert first.prompt + first.rejected == raw["rejected"]
    assert first.prompt.startswith("\n\nHuman: what are some pranks with a pen i can do?")
    assert all(r.chosen.strip() and r.rejected.strip() for r in result.records)


def test_shared_prefix_without_marker():
    assert split_shared_prefix("the cat sat", "the cat ran") == ("the cat ", "sat", "ran")
    assert split_shared_prefix("abc", "xyz") == ("", "abc", "xyz")
    prompt, chosen, rejected = split_shared_prefix("say hi", "say hi there")
    assert chosen.strip() and rejected.strip() and prompt + chosen == "say hi"


@pytest.mark.parametrize(
    "fmt, row",
    [
        ("pairs", {"prompt": "p", "chosen": "a", "rejected": "b"}),
        ("ranked", {"prompt": "", "responses": ["a", "b", "c"], "scores": [1, 2.5, 1]}),
        ("edits", {"prompt": "p", "original": "x=1", "edited": "x = 1"}),
        ("prompts", {"prompt": ""}),
        ("supervised", {"prompt": "q", "completion": "a"}),
        ("text", {"text": "import os\n"}),
    ],
)
def test_each_format_round_trips_through_every_file_type(tmp_path, fmt, row):
    import pandas as pd
    from datasets import Dataset

    expected = load_records(write_jsonl(tmp_path / "d.jsonl", [row, row]), fmt).records
    assert len(expected) == 2
    (tmp_path / "d.json").write_text(json.dumps({"data": [row, row]}))
    csv_row = {k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()}
    pd.DataFrame([csv_row, csv_row]).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame([row, row]).to_parquet(tmp_path / "d.parquet")
    Dataset.from_list([row, row]).save_to_disk(str(tmp_path / "ds"))
    for name in ("d.json", "d.csv", "d.parquet", "ds"):
        assert load_records(tmp_path / name, fmt).records == expected, name


def test_field_map(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [{"question": "q?", "answer": "a."}])
    rec = load_records(path, "supervised", field_map={"prompt": "question", "completion": "answer"}).records[0]
    assert (rec.prompt, rec.completion) == ("q?", "a.")


BAD_CASES = [
    ("pairs", '{"prompt": "p", "chosen": "a", "rejected": ', "bad.jsonl:2: malformed JSON"),
    ("pairs", '["a", "b"]', "bad.jsonl:2: must be a JSON object, got list"),
    ("pairs", {"prompt": "p", "chosen": "a"}, "bad.jsonl:2: field 'rejected': missing"),
    ("pairs", {"prompt": 3, "chosen": "a", "rejected": "b"}, "bad.jsonl:2: field 'prompt': must be a string, got int"),
    ("pairs", {"prompt": "p", "chosen": "  \n", "rejected": "b"}, "bad.jsonl:2: field 'chosen': is empty"),
    ("ranked", {"prompt": "p", "responses": ["a", "b"], "scores": [1]}, "bad.jsonl:2: field 'scores': has 1 scores for 2 responses"),
    ("ranked", {"prompt": "p", "responses": ["a"], "scores": [1]}, "bad.jsonl:2: field 'responses': needs K >= 2 responses, got 1"),
    ("ranked", '{"prompt": "p", "responses": ["a", "b"], "scores": [1, NaN]}', "bad.jsonl:2: field 'scores': item 1 must be finite"),
    ("ranked", '{"prompt": "p", "responses": ["a", "b"], "scores": [Infinity, 1]}', "bad.jsonl:2: field 'scores': item 0 must be finite"),
    ("ranked", {"prompt": "p", "responses": ["a", "b"], "scores": "1,2"}, "bad.jsonl:2: field 'scores': must be a list of numbers"),
    ("ranked", {"prompt": "p", "responses": ["a", "b"], "scores": [1, "2"]}, "bad.jsonl:2: field 'scores': item 1 must be a number"),
    ("ranked", {"prompt": "p", "responses": ["a", ""], "scores": [1, 2]}, "bad.jsonl:2: field 'responses': item 1 is empty"),
    ("edits", {"prompt": "p", "original": "", "edited": "x"}, "bad.jsonl:2: field 'original': is empty"),
    ("text", {"txt": "x"}, "bad.jsonl:2: field 'text': missing"),
]
GOOD = {
    "pairs": {"prompt": "p", "chosen": "a", "rejected": "b"},
    "ranked": {"prompt": "p", "responses": ["a", "b"], "scores": [1, 0]},
    "edits": {"prompt": "p", "original": "a", "edited": "b"},
    "text": {"text": "t"},
}


@pytest.mark.parametrize("fmt, bad, message", BAD_CASES)
def test_bad_input_names_file_line_and_field(tmp_path, fmt, bad, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD[fmt], bad, GOOD[fmt]])
    with pytest.raises(DataError) as err:
        load_records(path, fmt)
    assert message in str(err.value)
    # skip_invalid keeps both good neighbours and reports the bad one.
    result = load_records(path, fmt, skip_invalid=True)
    assert len(result.records) == 2 and len(result.problems) == 1
    assert message in str(result.problems[0])


def test_non_utf8_bytes_are_reported_with_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n{"prompt": "fine"}\n')
    result = load_records(path, "prompts", skip_invalid=True)
    assert [r.prompt for r in result.records] == ["ok", "fine"]
    assert "bad.jsonl:2: is not valid UTF-8 (byte 0xe9" in str(result.problems[0])
    csv_path = tmp_path / "bad.csv"
    csv_path.write_bytes(b"prompt\nok\ncaf\xe9\n")
    with pytest.raises(DataError, match=r"bad.csv:3: is not valid UTF-8"):
        load_records(csv_path, "prompts")


def test_json_csv_parquet_places(tmp_path):
    import pandas as pd

    (tmp_path / "l.json").write_text(json.dumps([GOOD["pairs"], {"prompt": "p", "chosen": "a"}]))
    with pytest.raises(DataError, match=r"l.json: item 1: field 'rejected': missing"):
        load_records(tmp_path / "l.json", "pairs")
    (tmp_path / "r.csv").write_text('prompt,responses,scores\np,"[""a"",""b""]","[1, 2]"\np,"[""a"",""b""]",oops\n')
    with pytest.raises(DataError, match=r"r.csv:3: field 'scores': must be a JSON-encoded list"):
        load_records(tmp_path / "r.csv", "ranked")
    pd.DataFrame([GOOD["pairs"], {"prompt": "p", "chosen": "a", "rejected": None}]).to_parquet(tmp_path / "p.parquet")
    with pytest.raises(DataError, match=r"p.parquet: row 1: field 'rejected': missing"):
        load_records(tmp_path / "p.parquet", "pairs")


def test_blank_lines_skipped_and_identical_edits_warned(tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", [GOOD["edits"], "", {"prompt": "p", "original": "a", "edited": "a"}])
    result = load_records(path, "edits")
    assert len(result.records) == 2 and not result.problems
    assert "e.jsonl:3: field 'edited': is identical" in str(result.warnings[0])


def test_missing_file_unknown_format_and_offline_hub(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_records(tmp_path / "nope.jsonl", "pairs")
    with pytest.raises(DataError, match="unknown data format"):
        load_records(tmp_path / "x.jsonl", "triples")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="cannot tell the file format"):
        load_records(tmp_path / "x.txt", "pairs")
    with pytest.raises(DataError, match="cannot load dataset"):
        load_records("someone/not-a-local-dataset", "pairs")


def test_gzipped_jsonl(tmp_path):
    import gzip

    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps(GOOD["pairs"]) + "\n" + '{"prompt": "p"}\n')
    result = load_records(path, "pairs", skip_invalid=True)
    assert len(result.records) == 1 and "d.jsonl.gz:2: field 'chosen': missing" in str(result.problems[0])
