"""Hostile input (issue 21, "Bad input"): each case ends in a one-line error naming the
file, the line and the field (exit status 2 from the CLI), or a counted warning, and
never costs a valid neighbour its record. See docs/reliability.md."""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
from pathlib import Path

import pytest

from tokenalign.cli import main
from tokenalign.data import loading
from tokenalign.data.loading import load_records
from tokenalign.errors import ConfigError, DataError, TokenalignError

GOOD = {"prompt": "p", "chosen": "a", "rejected": "b"}
DEEP = "[" * 200_000  # far deeper than the JSON parser follows


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _one_line_error(err: str, *parts: str) -> None:
    """stderr holds one line, naming every part, and no traceback."""
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and all(p in lines[0] for p in parts), (lines[0], parts)


# ---------------------------------------------------------------------------------------
# 1. Deeply nested JSON


def test_deep_jsonl_line_is_an_error_of_its_line(tmp_path):
    path = _jsonl(tmp_path / "deep.jsonl", [json.dumps(GOOD), DEEP, '{"prompt": "p", "chosen": ' + DEEP, json.dumps(GOOD)])
    with pytest.raises(DataError, match=r"deep\.jsonl:2: JSON nested too deeply"):
        load_records(path, "pairs")
    res = load_records(path, "pairs", skip_invalid=True, log_summary=False)
    assert res.n_valid == 2 and [p.line for p in res.problems] == [2, 3]


def test_deep_json_item_costs_only_that_item(tmp_path):
    deep_item = '{"prompt": "p", "chosen": "a", "rejected": ' + "[" * 5000 + "]" * 5000 + "}"
    text = "[" + json.dumps(GOOD) + ", " + deep_item + ", " + json.dumps({**GOOD, "prompt": "x"}) + "]"
    path = tmp_path / "deep.json"
    path.write_text(text)
    res = load_records(path, "pairs", skip_invalid=True, log_summary=False)
    assert [r.prompt for r in res.records] == ["p", "x"]
    assert [(p.line, p.unit) for p in res.problems] == [(1, "item")] and "nested too deeply" in str(res.problems[0])
    wrapped = tmp_path / "wrapped.json"  # {"data": [...]}, with a string that holds brackets
    wrapped.write_text('{"meta": "[{", "data": ' + text + "}")
    assert [r.prompt for r in load_records(wrapped, "pairs", skip_invalid=True, log_summary=False).records] == ["p", "x"]
    unclosed = tmp_path / "unclosed.json"
    unclosed.write_text(DEEP)
    res = load_records(unclosed, "pairs", skip_invalid=True, log_summary=False)
    assert res.n_valid == 0 and "nested too deeply" in str(res.problems[0])


def test_deep_json_in_a_csv_list_cell(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text('prompt,responses,scores\np,"' + "[" * 5000 + '","[1, 2]"\np,"[""a"", ""b""]","[1, 2]"\n')
    res = load_records(path, "ranked", skip_invalid=True, log_summary=False)
    assert res.n_valid == 1 and "r.csv:2: field 'responses': JSON nested too deeply" in str(res.problems[0])


def test_deep_json_from_the_cli_is_exit_2_one_line(tmp_path, capsys):
    path = _jsonl(tmp_path / "deep.jsonl", [json.dumps({"prompt": "def f():"}), DEEP])
    assert main(["eval", "--prompts", str(path), "--out", str(tmp_path / "e")]) == 2
    _one_line_error(capsys.readouterr().err, "deep.jsonl:2", "nested too deeply")
    assert main(["data", "check", str(path), "--format", "prompts"]) == 1  # readable file, problems found
    assert "deep.jsonl:2: JSON nested too deeply" in capsys.readouterr().out


def test_deep_json_in_reward_is_exit_2(tmp_path, tiny_tokenizer, capsys):
    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    path = _jsonl(tmp_path / "deep.jsonl", [json.dumps({"prompt": "p", "responses": ["a", "b"], "scores": [1, 0]}), DEEP])
    assert main(["reward", "--set", f"backbone={tmp_path / 'tok'}", "--set", f"data.train={path}",
                 "--set", "data.format=ranked", "--set", f"out_dir={tmp_path / 'out'}"]) == 2
    _one_line_error(capsys.readouterr().err, "deep.jsonl:2", "nested too deeply")


# ---------------------------------------------------------------------------------------
# 2. Lone surrogates


@pytest.mark.parametrize("fmt, row, field", [
    ("pairs", {"prompt": "p", "chosen": "a\ud800", "rejected": "b"}, "chosen"),
    ("pairs", {"prompt": "\udfff", "chosen": "a", "rejected": "b"}, "prompt"),
    ("ranked", {"prompt": "p", "responses": ["a", "\ud83d"], "scores": [1, 0]}, "responses"),
    ("prompts", {"prompt": [{"role": "user", "content": "hi \ud800"}]}, "prompt"),
    ("prompts", {"prompt": [{"role": "\ud800", "content": "hi"}]}, "prompt"),
    ("supervised", {"prompt": "p", "completion": "\udc80"}, "completion"),
])
def test_lone_surrogate_is_an_error_naming_the_field(tmp_path, fmt, row, field):
    path = _jsonl(tmp_path / "s.jsonl", [json.dumps(row)])  # json.dumps writes it as the escape "\ud800"
    assert "\\ud" in path.read_text()
    with pytest.raises(DataError, match=rf"s\.jsonl:1: field '{field}': .*lone surrogate"):
        load_records(path, fmt)


def test_lone_surrogate_from_the_cli(tmp_path, capsys):
    path = _jsonl(tmp_path / "s.jsonl", [json.dumps({"prompt": "ok"}), '{"prompt": "def f(\\ud800):"}'])
    assert main(["data", "check", str(path), "--format", "prompts"]) == 1  # no longer "clean"
    assert "s.jsonl:2: field 'prompt': holds a lone surrogate \\ud800" in capsys.readouterr().out
    assert main(["eval", "--prompts", str(path), "--out", str(tmp_path / "e")]) == 2
    _one_line_error(capsys.readouterr().err, "s.jsonl:2", "field 'prompt'", "lone surrogate")


# ---------------------------------------------------------------------------------------
# 3. CSV quotes


def test_unclosed_csv_quote_is_reported_and_costs_no_valid_row(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('prompt,chosen,rejected\np1,"a,b\np2,c,d\np3,e,f\n')
    with pytest.raises(DataError, match=r"q\.csv:2: a quote opened on this line is never closed"):
        load_records(path, "pairs")
    res = load_records(path, "pairs", skip_invalid=True, log_summary=False)
    assert [r.prompt for r in res.records] == ["p2", "p3"] and res.n_read == 3 and res.problems[0].line == 2
    last = tmp_path / "last.csv"  # in the last cell of the last line, without a line break
    last.write_text('prompt,chosen,rejected\np1,a,b\np2,c,"d')
    res = load_records(last, "pairs", skip_invalid=True, log_summary=False)
    assert [r.prompt for r in res.records] == ["p1"] and res.problems[0].line == 3


def test_stray_quote_closing_a_later_row_is_reported(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('prompt,chosen,rejected\np1,"a\nx,y\np2,"c",d\np3,e,f\n')
    res = load_records(path, "pairs", skip_invalid=True, log_summary=False)
    assert [r.prompt for r in res.records] == ["p2", "p3"]
    assert res.problems[0].line == 2 and "quote inside a quoted cell" in str(res.problems[0])


def test_multi_line_quoted_cells_stay_whole(tmp_path):
    path = tmp_path / "ok.csv"
    path.write_text('prompt,chosen,rejected\np1,"def f():\n    return ""x, y""\n",b\np2,c,d\n')
    res = load_records(path, "pairs")
    assert [r.chosen for r in res.records] == ['def f():\n    return "x, y"\n', "c"]


def test_csv_with_unclosed_quote_from_data_check(tmp_path, capsys):
    path = tmp_path / "q.csv"
    path.write_text('prompt,chosen,rejected\np1,"a,b\np2,c,d\np3,e,f\n')
    assert main(["data", "check", str(path), "--format", "pairs"]) == 1
    out = capsys.readouterr().out
    assert "q.csv:2: a quote opened on this line is never closed" in out and "1 invalid of 3 records" in out


# ---------------------------------------------------------------------------------------
# 4. Over-long lines


@pytest.mark.parametrize("name", ["long.jsonl", "long.csv", "long.jsonl.gz"])
def test_over_long_line_fails_at_once_naming_it(tmp_path, monkeypatch, name):
    monkeypatch.setattr(loading, "MAX_LINE_BYTES", 1000)
    header = "prompt,chosen,rejected\n" if ".csv" in name else ""
    good = "p,a,b\n" if ".csv" in name else json.dumps(GOOD) + "\n"
    data = (header + good + "x" * 5000 + "\n" + good + "y" * 3000).encode()  # the last one without a line break
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    line = 3 if header else 2
    with pytest.raises(DataError, match=rf"{re.escape(name)}:{line}: is longer than 1000 bytes"):
        load_records(path, "pairs")
    res = load_records(path, "pairs", skip_invalid=True, log_summary=False)
    assert res.n_valid == 2 and [p.line for p in res.problems] == [line, line + 2]


def test_over_long_line_reads_only_the_cap(tmp_path, monkeypatch):
    """Fail-fast reads about one cap's worth of a file without line breaks, not the file."""
    monkeypatch.setattr(loading, "MAX_LINE_BYTES", 1 << 16)
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as fh:
        fh.truncate(64 << 20)  # 64 MiB of NUL bytes, sparse on disk
    read = []
    real_open = loading._open_bytes

    class Counting:
        """A file handle that records how many bytes each readline returned."""

        def __init__(self, p: Path) -> None:
            self.fh = real_open(p)

        def readline(self, size: int = -1) -> bytes:
            data = self.fh.readline(size)
            read.append(len(data))
            return data

        def __enter__(self) -> "Counting":
            return self

        def __exit__(self, *exc: object) -> None:
            self.fh.close()

    counting_open = Counting
    monkeypatch.setattr(loading, "_open_bytes", counting_open)
    with pytest.raises(DataError, match=r"huge\.jsonl:1: is longer than 65536 bytes"):
        load_records(path, "pairs")
    assert sum(read) <= (1 << 16) + 1


# ---------------------------------------------------------------------------------------
# 5. Silently accepted before


def test_duplicate_json_keys_are_an_error(tmp_path):
    path = _jsonl(tmp_path / "dup.jsonl", [json.dumps(GOOD), '{"prompt": "p", "chosen": "a", "chosen": "evil", "rejected": "b"}'])
    with pytest.raises(DataError, match=r"dup\.jsonl:2: the key 'chosen' appears twice"):
        load_records(path, "pairs")
    assert load_records(path, "pairs", skip_invalid=True, log_summary=False).n_valid == 1
    doc = tmp_path / "dup.json"
    doc.write_text("[" + json.dumps(GOOD) + ', {"prompt": "p", "prompt": "q", "chosen": "a", "rejected": "b"}]')
    res = load_records(doc, "pairs", skip_invalid=True, log_summary=False)
    assert res.n_valid == 1 and res.problems[0].line == 1 and "appears twice" in str(res.problems[0])


@pytest.mark.parametrize("text", ["\u200b", "\ufeff\ufeff", "\x00", " \u200d\x00\u2060\n"])
def test_invisible_only_response_is_empty(tmp_path, text):
    path = _jsonl(tmp_path / "z.jsonl", [json.dumps({"prompt": "p", "chosen": "a", "rejected": text}),
                                         json.dumps({"prompt": "p", "responses": ["a", text], "scores": [1, 0]})])
    with pytest.raises(DataError, match=r"z\.jsonl:1: field 'rejected': is empty"):
        load_records(path, "pairs")
    res = load_records(path, "ranked", skip_invalid=True, log_summary=False)
    assert "z.jsonl:2: field 'responses': item 1 is empty" in str(res.problems[-1])


def test_visible_text_with_a_nul_is_kept(tmp_path):
    path = _jsonl(tmp_path / "n.jsonl", [json.dumps({"prompt": "p", "chosen": "a\x00b", "rejected": "\u200bc"})])
    assert load_records(path, "pairs").n_valid == 1


def test_ranked_list_with_one_response_under_two_scores_is_contradictory(tmp_path):
    path = _jsonl(tmp_path / "r.jsonl", [
        json.dumps({"prompt": "p", "responses": ["a", "b", "a"], "scores": [1, 0, 2]}),
        json.dumps({"prompt": "p", "responses": ["a", "b", "a"], "scores": [1, 0, 1]}),  # a repeat, consistent
    ])
    with pytest.raises(DataError, match=r"r\.jsonl:1: field 'responses': items 0 and 2 are the same response "
                                        r"with different scores \(1 and 2\): contradictory"):
        load_records(path, "ranked")
    assert load_records(path, "ranked", skip_invalid=True, log_summary=False).n_valid == 1


def test_truncation_is_logged_with_counts(monkeypatch, caplog):
    from tokenalign.rewards import batching

    monkeypatch.setattr(batching, "TRUNCATION", batching.TruncationLog())
    long, short = list(range(100_000)), [1, 2]
    with caplog.at_level(logging.WARNING, logger="tokenalign.rewards.batching"):
        for _ in range(12):
            batching.collate_for_reward([[0], [0]], [long, short], pad_id=0, max_length=16)
        batching.pack_shared_prompt([([0], [long, short, long])], pad_id=0, max_length=16)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("1 of 2 reward-model sequences so far were longer than max_length=16 tokens")
    assert messages[1].startswith("10 of 20 ")  # the 10th batch that cut one; then the 100th
    assert len(messages) == 2 and batching.TRUNCATION.n_cut == 14 and batching.TRUNCATION.n_seen == 27


# ---------------------------------------------------------------------------------------
# 6. and 8. Pickles, YAML, HTML, no eval


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def _evil_file(path: Path) -> Path:
    import torch

    torch.save({"z": _Evil()}, path)
    return path


def test_refused_pickle_is_one_line_naming_the_file(tmp_path, monkeypatch):
    from tokenalign.utils.torch_files import load_weights_only

    monkeypatch.chdir(tmp_path)
    evil = _evil_file(tmp_path / "evil.pt")
    with pytest.raises(TokenalignError) as err:
        load_weights_only(evil)
    message = str(err.value)
    assert "\n" not in message and "evil.pt: refused to load" in message and "system" in message
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "cut.pt").write_bytes(evil.read_bytes()[:40])
    with pytest.raises(TokenalignError, match=r"cut\.pt: cannot read as a torch file"):
        load_weights_only(tmp_path / "cut.pt")


def test_malicious_objective_state_is_refused(tmp_path, monkeypatch):
    from tokenalign.objectives.dm import DistributionMatching

    monkeypatch.chdir(tmp_path)
    _evil_file(tmp_path / "dm_state.pt")
    with pytest.raises(TokenalignError, match=r"dm_state\.pt: refused to load"):
        DistributionMatching.load(object(), tmp_path)  # refused before it touches the objective
    assert not (tmp_path / "pwned").exists()


def test_malicious_checkpoint_is_refused(tmp_path, monkeypatch):
    """The checkpoint's optimizer state loads with weights_only: a pickle that would run
    code is refused, in one line naming the file."""
    import torch

    from tokenalign.utils.checkpoint import load_checkpoint

    monkeypatch.chdir(tmp_path)
    _evil_file(tmp_path / "optimizer.pt")
    (tmp_path / "state.json").write_text("{}")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(TokenalignError, match="optimizer.pt") as err:
        load_checkpoint(tmp_path, optimizer, None)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "pwned").exists()


def test_yaml_config_with_a_python_tag_is_refused(tmp_path, monkeypatch):
    from tokenalign.config import load_config
    from tokenalign.jobs.reward import RewardRunConfig

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.yaml"
    path.write_text('out_dir: !!python/object/apply:os.system ["touch pwned"]\n')
    with pytest.raises(ConfigError, match=r"evil\.yaml:1: invalid YAML"):
        load_config(RewardRunConfig, path)
    with pytest.raises(ConfigError):
        load_config(RewardRunConfig, None, ["out_dir=!!python/object/apply:os.system [touch pwned]"])
    assert not (tmp_path / "pwned").exists()


def test_yaml_python_tag_from_the_cli_is_exit_2(tmp_path, capsys):
    path = tmp_path / "evil.yaml"
    path.write_text('out_dir: !!python/object/apply:os.system ["touch pwned"]\n')
    assert main(["config", "reward", "--config", str(path)]) == 2
    _one_line_error(capsys.readouterr().err, "evil.yaml:1", "invalid YAML")


def test_html_report_escapes_completions(tmp_path):
    from tokenalign.report.heatmap import HeatmapExample
    from tokenalign.report.html import Report

    attack = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    report = Report(f"run {attack}").add_heading(attack).add_text(attack)
    report.add_table([{"completion": attack, attack: 1}], title=attack)
    report.add_heatmaps([HeatmapExample(attack, [(0, 8)], [0.5], title=attack, prompt=attack)], title=attack)
    out = report.render()
    assert "<script>" not in out and "<img src=x" not in out and "&lt;script&gt;" in out


def test_no_eval_exec_shell_or_unsafe_loads_in_the_source():
    """Keep the probes' findings true: nothing runs strings as code (compile() only checks
    syntax) or loads pickles unchecked."""
    src = Path(__file__).parent.parent / "src" / "tokenalign"
    banned = re.compile(r"(?<![.\w])(eval|exec)\(|shell\s*=\s*True|os\.system|os\.popen|pickle\.loads?\("
                        r"|yaml\.(load|unsafe_load|full_load)\(|marshal\.|torch\.load\((?![^)]*weights_only=True)")
    found = [f"{p.relative_to(src)}:{n}: {line.strip()}" for p in src.rglob("*.py")
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if banned.search(line)]
    assert not found, found
