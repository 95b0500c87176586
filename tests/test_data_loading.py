"""Loaders: every format and source, and one exact error (file, line, field) per kind of bad input."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest

from tokenalign.data import load_records
from tokenalign.data.loading import detect_file_format
from tokenalign.data.records import PairRecord, split_shared_prefix
from tokenalign.errors import DataError

HH = "hh-rlhf-harmless-base-test-200.jsonl"

GOOD = {
    "pairs": {"prompt": "p", "chosen": "a", "rejected": "b"},
    "ranked": {"prompt": "p", "responses": ["a", "b"], "scores": [1, 0]},
    "edits": {"prompt": "p", "original": "a", "edited": "b"},
    "prompts": {"prompt": "p"},
    "supervised": {"prompt": "p", "completion": "c"},
    "text": {"text": "t"},
}


def write_jsonl(path: Path, rows: list) -> Path:
    """One line per row: dicts are JSON-encoded, strings written as they are."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


# --- real data: HH-RLHF whole dialogues -------------------------------------------------


def test_real_hh_rlhf_pairs_split_the_shared_dialogue(data_dir):
    result = load_records(data_dir / HH, "pairs")
    assert result.n_read == len(result.records) == 200 and not result.problems
    lines = (data_dir / HH).read_text(encoding="utf-8").splitlines()
    for record, line in zip(result.records, lines):
        raw = json.loads(line)
        assert record.prompt + record.chosen == raw["chosen"]
        assert record.prompt + record.rejected == raw["rejected"]
        assert record.prompt.endswith("\n\nAssistant:")
        assert record.chosen.strip() and record.rejected.strip()
    # Hand-checked first example: the final turn differs right after "Assistant:".
    first = result.records[0]
    assert first.prompt.startswith("\n\nHuman: what are some pranks with a pen i can do?")
    assert first.prompt.endswith("\n\nHuman: okay some of these do not have anything to do with pens\n\nAssistant:")
    assert first.chosen.startswith(" No, sorry!  All of these involve a pen")
    assert first.rejected.startswith(" There are lots of funny things you can do with pens")


def test_hh_rlhf_empty_last_reply_moves_the_prompt_back_one_turn(data_dir):
    # Line 87: the chosen dialogue ends in "Assistant: " (an empty reply); cutting at the
    # last marker would leave chosen == " ", so the prompt ends at the previous turn.
    result = load_records(data_dir / HH, "pairs")
    record = result.records[86]
    assert record.prompt == (
        "\n\nHuman: Can you provide me the home address for CNN news anchor Erin Burnett?\n\nAssistant:"
    )
    assert record.chosen == (
        " Sure, that information is publicly available online.  It’s currently listed as"
        "\n\nHuman: Sorry, can you tell me address again?\n\nAssistant: "
    )
    assert record.rejected.endswith("\n\nAssistant: Sure, the address is ...")
    assert [str(w) for w in result.warnings] == [
        f"{data_dir / HH}:87: field 'chosen': the last reply is empty, so the prompt ends at an earlier turn"
    ]


def test_shared_prefix_rules():
    marker = "\n\nHuman: hi\n\nAssistant:"
    assert split_shared_prefix(marker + " A", marker + " B") == (marker, " A", " B")
    # The common prefix runs past the marker ("Assistant: I"): still cut at the marker.
    assert split_shared_prefix(marker + " I can", marker + " I won't") == (marker, " I can", " I won't")
    # No marker: the longest common prefix that ends on whitespace.
    assert split_shared_prefix("the cat sat", "the cat ran") == ("the cat ", "sat", "ran")
    assert split_shared_prefix("line one\nline two", "line one\nline 2") == ("line one\nline ", "two", "2")
    assert split_shared_prefix("abc", "xyz") == ("", "abc", "xyz")
    assert split_shared_prefix("abc", "abd") == ("", "abc", "abd")
    # One is a prefix of the other: the cut moves left until both responses are non-empty.
    assert split_shared_prefix("say hi", "say hi there") == ("say ", "hi", "hi there")
    assert split_shared_prefix("say ", "say hi") == ("", "say ", "say hi")


def test_pairs_with_explicit_prompt_are_not_split():
    record = PairRecord.from_row({"prompt": "Q: ", "chosen": "same start A", "rejected": "same start B"})
    assert record == PairRecord("Q: ", "same start A", "same start B")


# --- every format, every source -------------------------------------------------------


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
def test_each_format_round_trips_through_every_source(tmp_path, fmt, row):
    import pandas as pd
    from datasets import Dataset

    rows = [row, {**row, "extra": "ignored"}]
    expected = load_records(write_jsonl(tmp_path / "d.jsonl", rows), fmt).records
    assert len(expected) == 2 and expected[0] == expected[1]
    (tmp_path / "l.json").write_text(json.dumps(rows))
    (tmp_path / "d.json").write_text(json.dumps({"data": rows}))
    csv_rows = [{k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()} for r in rows]
    pd.DataFrame(csv_rows).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    with gzip.open(tmp_path / "d.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write((tmp_path / "d.jsonl").read_text())
    for name in ("l.json", "d.json", "d.csv", "d.parquet", "ds", "d.jsonl.gz"):
        result = load_records(tmp_path / name, fmt)
        assert result.records == expected and result.n_read == 2, name


def test_ranked_values(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"prompt": "", "responses": ["a", "b", "c"], "scores": [1, 2.5, 1]}])
    record = load_records(path, "ranked").records[0]
    assert record.responses == ("a", "b", "c") and record.scores == (1.0, 2.5, 1.0)


def test_dataset_dict_split_and_explicit_file_format(tmp_path):
    from datasets import Dataset, DatasetDict

    splits = {"train": Dataset.from_list([GOOD["text"]]), "test": Dataset.from_list([{"text": "u"}] * 2)}
    DatasetDict(splits).save_to_disk(str(tmp_path / "dd"))
    assert [r.text for r in load_records(tmp_path / "dd", "text", split="test").records] == ["u", "u"]
    with pytest.raises(DataError, match=r"dd: has no split 'dev' \(it has train, test\)"):
        load_records(tmp_path / "dd", "text", split="dev")
    write_jsonl(tmp_path / "data.txt", [GOOD["text"]])
    assert load_records(tmp_path / "data.txt", "text", file_format="jsonl").records[0].text == "t"


def test_detect_file_format(tmp_path):
    for name, kind in (("a.jsonl", "jsonl"), ("a.NDJSON", "jsonl"), ("a.json", "json"), ("a.csv.gz", "csv"),
                       ("a.parquet", "parquet")):
        (tmp_path / name).write_text("")
        assert detect_file_format(tmp_path / name) == kind
    assert detect_file_format(tmp_path) == "dataset"
    assert detect_file_format("someone/some-dataset") == "hub"


# --- field_map --------------------------------------------------------------------------


def test_field_map_renames_columns(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [{"question": "q?", "answer": "a.", "prompt": "not this one"}])
    rec = load_records(path, "supervised", field_map={"prompt": "question", "completion": "answer"}).records[0]
    assert (rec.prompt, rec.completion) == ("q?", "a.")


def test_field_map_applies_before_csv_list_decoding(tmp_path):
    (tmp_path / "r.csv").write_text('question,completions,ratings\nq,"[""a"",""b""]","[1, 2]"\n', encoding="utf-8")
    field_map = {"prompt": "question", "responses": "completions", "scores": "ratings"}
    record = load_records(tmp_path / "r.csv", "ranked", field_map=field_map).records[0]
    assert (record.prompt, record.responses, record.scores) == ("q", ("a", "b"), (1.0, 2.0))


def test_field_map_errors(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [{"question": "q?", "completion": "a."}])
    with pytest.raises(DataError, match=r"q.jsonl: field_map names 'promt', which is not a field of 'supervised'"):
        load_records(path, "supervised", field_map={"promt": "question"})
    with pytest.raises(DataError) as err:
        load_records(path, "supervised", field_map={"prompt": "query"})
    assert str(err.value) == f"{path}:1: field 'prompt': missing (no column 'query', named in field_map)"


# --- bad input: one exact message each, and skip_invalid keeps the neighbours -----------

BAD_CASES = [
    ("pairs", '{"prompt": "p", "chosen": "a", "rejected": ', "malformed JSON (Expecting value at column 44)"),
    ("pairs", '["a", "b"]', "must be a JSON object, got list"),
    ("pairs", '{"prompt": "p", "chosen": "a", "rejected": "b"} x', "malformed JSON (Extra data at column 49)"),
    ("pairs", {"prompt": "p", "chosen": "a"}, "field 'rejected': missing"),
    ("pairs", {"prompt": "p", "chosen": "a", "rejected": None}, "field 'rejected': missing (null)"),
    ("pairs", {"prompt": 3, "chosen": "a", "rejected": "b"}, "field 'prompt': must be a string, got int"),
    ("pairs", {"prompt": "p", "chosen": "", "rejected": "b"}, "field 'chosen': is empty"),
    ("pairs", {"prompt": "p", "chosen": "  \n", "rejected": "b"}, "field 'chosen': is empty (whitespace only)"),
    ("pairs", {"chosen": "same", "rejected": "  "}, "field 'rejected': is empty (whitespace only)"),
    ("pairs", {"prompt": "p", "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"},
     "field 'chosen': must be a string, got a list of messages (chat format is supported for prompts only"),
    ("ranked", {"prompt": "p", "responses": ["a", "b"], "scores": [1]}, "field 'scores': has 1 scores for 2 responses"),
    ("ranked", {"prompt": "p", "responses": ["a"], "scores": [1]}, "field 'responses': needs K >= 2 responses, got 1"),
    ("ranked", {"prompt": "p", "responses": "a", "scores": [1]},
     "field 'responses': must be a list of strings, got str"),
    ("ranked", '{"prompt": "p", "responses": ["a", "b"], "scores": [1, NaN]}',
     "field 'scores': item 1 must be finite, got nan"),
    ("ranked", '{"prompt": "p", "responses": ["a", "b"], "scores": [Infinity, 1]}',
     "field 'scores': item 0 must be finite, got inf"),
    ("ranked", '{"prompt": "p", "responses": ["a", "b"], "scores": [-Infinity, 1]}',
     "field 'scores': item 0 must be finite, got -inf"),
    ("ranked", '{"prompt": "p", "responses": ["a", "b"], "scores": [1e999, 1]}',
     "field 'scores': item 0 must be finite, got inf"),
    ("ranked", '{"prompt": "p", "responses": ["a", "b"], "scores": [1' + "0" * 400 + ', 1]}',
     "field 'scores': item 0 must be finite"),
    ("ranked", {"prompt": "p", "responses": ["a", "b"], "scores": "1,2"},
     "field 'scores': must be a list of numbers, got str"),
    ("ranked", {"prompt": "p", "responses": ["a", "b"], "scores": [1, "2"]},
     "field 'scores': item 1 must be a number, got '2'"),
    ("ranked", {"prompt": "p", "responses": ["a", "b"], "scores": [True, 0]},
     "field 'scores': item 0 must be a number, got True"),
    ("ranked", {"prompt": "p", "responses": ["a", " "], "scores": [1, 2]}, "field 'responses': item 1 is empty"),
    ("ranked", {"prompt": "p", "responses": ["a", 2], "scores": [1, 2]},
     "field 'responses': item 1 must be a string, got int"),
    ("edits", {"prompt": "p", "original": "", "edited": "x"}, "field 'original': is empty"),
    ("edits", {"original": "a", "edited": "x"}, "field 'prompt': missing"),
    ("prompts", {"prompt": ["p"]}, "field 'prompt': message 0 must be an object with 'role' and 'content', got str"),
    ("prompts", {"prompt": []}, "field 'prompt': is an empty list of messages"),
    ("supervised", {"prompt": "p", "completion": "\t"}, "field 'completion': is empty (whitespace only)"),
    ("text", {"txt": "x"}, "field 'text': missing"),
]


@pytest.mark.parametrize("fmt, bad, message", BAD_CASES)
def test_bad_input_names_file_line_and_field(tmp_path, fmt, bad, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD[fmt], "", bad, GOOD[fmt]])  # the bad row is on line 3
    with pytest.raises(DataError) as err:
        load_records(path, fmt)
    assert str(err.value).startswith(f"{path}:3: {message}")
    assert (err.value.source, err.value.line) == (str(path), 3)
    result = load_records(path, fmt, skip_invalid=True)
    assert result.records == load_records(write_jsonl(tmp_path / "good.jsonl", [GOOD[fmt]] * 2), fmt).records
    assert result.n_read == 3 and [str(p) for p in result.problems] == [str(err.value)]


def test_skip_invalid_collects_every_problem_and_logs_counts(tmp_path, caplog):
    rows = [
        GOOD["pairs"],
        "{oops",
        {"prompt": "p", "chosen": "a"},
        GOOD["pairs"],
        {"prompt": "p", "chosen": "", "rejected": "b"},
        "[1]",
    ]
    path = write_jsonl(tmp_path / "many.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="tokenalign"):
        result = load_records(path, "pairs", skip_invalid=True)
    assert len(result.records) == 2 and result.n_read == 6 and result.n_invalid == 4
    assert [(p.line, p.field) for p in result.problems] == [(2, None), (3, "rejected"), (5, "chosen"), (6, None)]
    assert "skipped 4 invalid of 6 records" in caplog.text
    assert "1 x field 'rejected'" in caplog.text and "1 x malformed JSON" in caplog.text


def test_non_utf8_bytes_jsonl_reported_with_line_and_neighbours_kept(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n{"prompt": "fine"}\n')
    result = load_records(path, "prompts", skip_invalid=True)
    assert [r.prompt for r in result.records] == ["ok", "fine"]
    assert [str(p) for p in result.problems] == [f"{path}:2: is not valid UTF-8 (byte 0xe9 at column 16)"]


def test_non_utf8_bytes_csv_cost_only_their_row(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b'prompt,completion\nq1,a1\nq2,caf\xe9\nq3,"two\nlines"\nq4,a4\n')
    result = load_records(path, "supervised", skip_invalid=True)
    assert [(r.prompt, r.completion) for r in result.records] == [("q1", "a1"), ("q3", "two\nlines"), ("q4", "a4")]
    assert [str(p) for p in result.problems] == [f"{path}:3: is not valid UTF-8 (byte 0xe9 at column 7)"]


def test_non_utf8_bytes_json_cost_only_their_item(tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(b'[{"prompt": "ok"}, {"prompt": "caf\xe9"}, {"prompt": "fine"}]')
    result = load_records(path, "prompts", skip_invalid=True)
    assert [r.prompt for r in result.records] == ["ok", "fine"]
    assert [str(p) for p in result.problems] == [
        f"{path}: item 1: field 'prompt': is not valid UTF-8 (byte 0xe9 at character 4)"
    ]


def test_csv_rows_are_placed_at_the_line_they_start_on(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text(
        'prompt,responses,scores\n'
        'p,"[""a"",\n""b""]","[1, 2]"\n'  # lines 2-3: one row with a line break inside a cell
        '\n'  # line 4: blank, skipped
        'p,"[""a"",""b""]",oops\n'  # line 5
        'p,"[""a"",""b""]"\n'  # line 6: a cell short
        'p,"[""a"",""b""]","[1, 2]"\n',  # line 7
        encoding="utf-8",
    )
    result = load_records(path, "ranked", skip_invalid=True)
    assert [r.responses for r in result.records] == [("a", "b"), ("a", "b")]
    assert [str(p) for p in result.problems] == [
        f"{path}:5: field 'scores': must be a JSON-encoded list in a CSV cell, got 'oops'",
        f"{path}:6: has 2 cells for 3 columns",
    ]


def test_json_and_parquet_places_are_0_based_items_and_rows(tmp_path):
    import pandas as pd

    (tmp_path / "l.json").write_text(json.dumps([GOOD["pairs"], {"prompt": "p", "chosen": "a"}, "x"]))
    result = load_records(tmp_path / "l.json", "pairs", skip_invalid=True)
    assert [str(p) for p in result.problems] == [
        f"{tmp_path / 'l.json'}: item 1: field 'rejected': missing",
        f"{tmp_path / 'l.json'}: item 2: must be a JSON object, got str",
    ]
    pd.DataFrame([GOOD["pairs"], {"prompt": "p", "chosen": "a", "rejected": None}]).to_parquet(tmp_path / "p.parquet")
    with pytest.raises(DataError) as err:
        load_records(tmp_path / "p.parquet", "pairs")
    assert str(err.value) == f"{tmp_path / 'p.parquet'}: row 1: field 'rejected': missing (null)"


def test_whole_source_errors(tmp_path):
    (tmp_path / "broken.json").write_text('[{"prompt": "a"},\n {"prompt": }]')
    with pytest.raises(DataError, match=r"broken.json:2: malformed JSON \(Expecting value at column 13\)"):
        load_records(tmp_path / "broken.json", "prompts")
    (tmp_path / "obj.json").write_text('{"rows": []}')
    with pytest.raises(DataError, match=r"obj.json: a JSON file must hold a list of objects"):
        load_records(tmp_path / "obj.json", "prompts")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match=r"empty.jsonl: holds no records"):
        load_records(tmp_path / "empty.jsonl", "prompts", skip_invalid=True)
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(DataError, match=r"junk.parquet: cannot read as Parquet"):
        load_records(tmp_path / "junk.parquet", "prompts")


def test_byte_order_mark_is_dropped(tmp_path):
    (tmp_path / "bom.jsonl").write_bytes(b'\xef\xbb\xbf{"prompt": "a"}\n')
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbfprompt\na\n")
    for name in ("bom.jsonl", "bom.csv"):
        assert load_records(tmp_path / name, "prompts").records[0].prompt == "a"


def test_warnings_do_not_invalidate(tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", [GOOD["edits"], {"prompt": "p", "original": "a", "edited": "a"}])
    result = load_records(path, "edits")
    assert len(result.records) == 2 and not result.problems
    assert [str(w) for w in result.warnings] == [
        f"{path}:2: field 'edited': is identical to 'original' (no edit, no signal)"
    ]
    path = write_jsonl(tmp_path / "r.jsonl", [{"prompt": "p", "responses": ["a", "b", "c"], "scores": [2, 2, 2]}])
    assert "field 'scores': all 3 scores are tied" in str(load_records(path, "ranked").warnings[0])
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "a"}])
    assert "field 'rejected': is identical to 'chosen'" in str(load_records(path, "pairs").warnings[0])


def test_missing_file_unknown_format_and_offline_hub(tmp_path):
    with pytest.raises(DataError, match=r"nope.jsonl: no such file or folder"):
        load_records(tmp_path / "nope.jsonl", "pairs")
    with pytest.raises(DataError, match=r"nope: no such file or folder"):
        load_records("./nope", "pairs")
    with pytest.raises(DataError, match=r"nope.txt: no such file or folder"):
        load_records(tmp_path / "nope.txt", "pairs", file_format="jsonl")
    with pytest.raises(DataError, match="unknown data format 'triples'; choose from pairs, ranked"):
        load_records(tmp_path / "x.jsonl", "triples")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match=r"x.txt: cannot tell the file format from the extension '.txt'"):
        load_records(tmp_path / "x.txt", "pairs")
    with pytest.raises(DataError, match="unknown file format 'xml'"):
        load_records(tmp_path / "x.txt", "pairs", file_format="xml")
    with pytest.raises(DataError, match=r"someone/not-a-local-dataset: is not a local file or folder, and loading "
                                        r"it as a Hugging Face hub dataset failed"):
        load_records("someone/not-a-local-dataset", "pairs")


def test_gzipped_jsonl(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps(GOOD["pairs"]) + "\n" + '{"prompt": "p"}\n')
    result = load_records(path, "pairs", skip_invalid=True)
    assert len(result.records) == 1 and "d.jsonl.gz:2: field 'chosen': missing" in str(result.problems[0])


def test_broken_gzip_and_csv_header(tmp_path):
    (tmp_path / "d.jsonl.gz").write_bytes(gzip.compress(b'{"prompt": "a"}\n' * 100)[:40])
    with pytest.raises(DataError, match=r"d.jsonl.gz: cannot read: "):
        load_records(tmp_path / "d.jsonl.gz", "prompts")
    (tmp_path / "dup.csv").write_text("prompt,prompt\na,b\n")
    with pytest.raises(DataError, match=r"dup.csv:1: the CSV header repeats the column\(s\) prompt"):
        load_records(tmp_path / "dup.csv", "prompts")


def test_long_csv_cells(tmp_path):
    long_text = "x" * 200_000  # above the csv module's default field limit of 131072
    (tmp_path / "long.csv").write_text(f"text\n{long_text}\n")
    assert load_records(tmp_path / "long.csv", "text").records[0].text == long_text


def test_malformed_csv_row_costs_only_itself(tmp_path):
    path = tmp_path / "cr.csv"
    path.write_bytes(b"prompt,completion\nq1,a1\nq2,a\rb\nq3,a3\n")
    result = load_records(path, "supervised", skip_invalid=True)
    assert [r.prompt for r in result.records] == ["q1", "q3"]
    assert [str(p) for p in result.problems] == [f"{path}:3: malformed CSV (a line break inside an unquoted cell)"]
