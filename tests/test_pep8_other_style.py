"""The pep8 task's other-style prompts: the shipped set and its rule, `eval --set
prompts_split=other-style`, the bad-split error, and benchmarks/eval_other_style.py."""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path

import pytest

from tokenalign.errors import ConfigError
from tokenalign.tasks import get_task
from tokenalign.tasks.pep8 import ASSETS
from tokenalign.tasks.pep8.other_style import NOTICE, build_other_style, header_stats, licence, set_stats
from tokenalign.tasks.pep8.prompts import extract_headers, load_prompts

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def shipped() -> list[dict]:
    return [json.loads(line) for line in (ASSETS / "prompts_other_style.jsonl").read_text(encoding="utf-8").splitlines()]


def test_other_style_set_loads_and_is_disjoint_from_the_stdlib_prompts():
    prompts = get_task("pep8").prompts("other-style")
    assert 100 <= len(prompts) <= 200 and len(set(prompts)) == len(prompts)
    assert get_task("pep8").prompts("other-style", 5) == prompts[:5]
    assert not set(prompts) & (set(load_prompts("test")) | set(load_prompts("train")))
    # other styles: far more type hints and longer docstrings than the stdlib test headers
    ours, stdlib = set_stats(prompts), set_stats(load_prompts("test"))
    assert ours["type_hint_share"] > 0.5 > stdlib["type_hint_share"]
    assert ours["mean_docstring_lines"] > stdlib["mean_docstring_lines"]


def test_every_other_style_prompt_is_a_header_the_extractor_takes():
    for p in get_task("pep8").prompts("other-style"):
        assert extract_headers(p + "\n    pass\n") == [p]
        assert header_stats(p) is not None


def test_every_prompt_names_a_permissive_source_and_the_notice_lists_it():
    records = shipped()
    notice = (ASSETS / NOTICE).read_text(encoding="utf-8")
    for r in records:
        assert r["licence"] and any(word in r["licence"] for word in ("MIT", "BSD", "Apache"))
        assert f"{r['package']} {r['version']}: {r['licence']}; " in notice and r["file"] in notice
        assert r["file"].endswith(".py") and "_click/" not in r["file"]  # typer's copy of click is click's code
    assert max(sum(r["package"] == p for r in records) for p in {r["package"] for r in records}) <= 8


def test_the_builder_reproduces_the_shipped_headers_of_a_package():
    dist = metadata.distribution("attrs")
    mine = [r for r in shipped() if r["package"] == "attrs"]
    if not mine or mine[0]["version"] != dist.version:
        pytest.skip("another attrs version than the one the set was built from")
    assert licence(dist) == "MIT"
    assert build_other_style(packages=("attrs",)) == mine


def test_an_unknown_prompt_split_is_a_one_line_error_naming_the_choices(tmp_path):
    with pytest.raises(ConfigError, match="no prompt split 'styled': choose one of train, test, other-style"):
        get_task("pep8").prompts("styled")
    from tokenalign.cli import main

    assert main(["eval", "--out", str(tmp_path / "e"), "--set", "prompts_split=styled"]) == 2


def test_eval_on_the_other_style_split(tmp_path):
    from tokenalign.jobs.eval import EvalConfig, run_eval
    from tokenalign.rollout.generate import SamplingSettings

    out = tmp_path / "eval"
    m = run_eval(EvalConfig(prompts_split="other-style", n_prompts=2, samples_per_prompt=2, expected_max_k=2,
                            reference="none", sampling=SamplingSettings.for_evaluation(max_new_tokens=4), out_dir=str(out)))
    assert m["prompts"] == 2 and m["samples"] == 4 and 0.0 <= m["failure_rate"] <= 1.0
    seen = [json.loads(line)["prompt"] for line in (out / "samples.jsonl").read_text().splitlines()]
    assert set(seen) == set(load_prompts("other-style", 2))


def test_eval_other_style_benchmark_on_a_fake_run_folder(tmp_path, monkeypatch):
    from tokenalign.tasks.pep8 import base_model_path

    monkeypatch.syspath_prepend(str(BENCH))
    import eval_other_style as bench

    runs = tmp_path / "runs"
    for name in ("token-0", "rloo-0"):
        (runs / name / "align").mkdir(parents=True)
        (runs / name / "config.yaml").write_text("samples_per_prompt: 2\nsampling:\n  max_new_tokens: 4\n")
        (runs / name / "align" / "model").symlink_to(base_model_path())  # "aligned" = the base model
        done = name == "token-0"
        (runs / name / "summary.json").write_text(json.dumps({"align_before": {}, "align_after": {}} if done else {}))
    results = tmp_path / "results" / "table"
    args = [str(runs), "--n-prompts", "1", "--out", str(tmp_path / "evals"), "--results", str(results)]
    assert bench.main(args) == 0
    table = results.with_suffix(".md").read_text()
    assert "| failed samples |" in table and "after token" in table and "rloo" not in table  # rloo-0 is unfinished
    rows = json.loads(results.with_suffix(".json").read_text())["runs"]
    # the same model, prompts and seed: the "aligned" model's samples are the base's
    assert [r["method"] for r in rows] == ["token"] and rows[0]["after"]["failure_rate"] == rows[0]["base"]["failure_rate"]
    assert abs(rows[0]["after"]["kl_to_reference"]) < 1e-6
    stamps = {p: p.stat().st_mtime for p in (tmp_path / "evals").glob("*/metrics.json")}
    assert len(stamps) == 2  # the base at seed 0 and the finished run
    assert bench.main(args) == 0  # resumed: nothing evaluated again
    assert stamps == {p: p.stat().st_mtime for p in (tmp_path / "evals").glob("*/metrics.json")}
    del sys.modules["eval_other_style"]
