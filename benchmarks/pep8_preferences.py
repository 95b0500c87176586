"""Shared steps of the pep8 equal-information benchmarks: run a ``tokenalign`` command,
the base model's ranked samples on training prompts, and preference pairs from them.

Every learned reward in these benchmarks starts from the same data: K samples of the base
model per training prompt (never a test prompt), ranked by pycodestyle's score; a token
reward, a sequence reward and a DPO policy each learn from it, so comparisons between them
are at equal information.
"""

from __future__ import annotations

import itertools
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("pep8_preferences")


def tokenalign(*args: str) -> None:
    """Run ``tokenalign ARGS`` in a child process (each run its own memory and seed state)."""
    command = [sys.executable, "-m", "tokenalign", *args]
    log.info("running %s", " ".join(command))
    t0 = time.perf_counter()
    subprocess.run(command, check=True)
    log.info("%.0f s", time.perf_counter() - t0)


def sets(**kv) -> list[str]:
    """``--set key=value`` arguments; ``a__b`` names the key ``a.b``."""
    return [x for k, v in kv.items() for x in ("--set", f"{k.replace('__', '.')}={v}")]


def finished(folder: Path) -> bool:
    summary = folder / "summary.json"
    return summary.is_file() and bool(json.loads(summary.read_text()).get("finished"))


def ranked_base_samples(folder: Path, n_prompts: int, smoke: bool = False) -> Path:
    """The base model's 4 samples per training prompt, ranked by pycodestyle (a demo run on
    training prompts with the alignment off); returns its ranked.jsonl."""
    if not (folder / "summary.json").is_file():
        tokenalign("demo", "--out", str(folder), *(["--quick"] if smoke else []),
                   *sets(prompt_split="train", n_prompts=n_prompts, align__enabled="false", seed=0))
    return folder / "ranked.jsonl"


def pairs_from_ranked(ranked: Path, path: Path) -> int:
    """Every strictly ordered pair of each ranked list as (prompt, chosen, rejected); ties
    (e.g. two syntax failures) give no pair. Returns the pair count."""
    from tokenalign.utils.io import atomic_write_text

    rows = []
    for line in ranked.read_text().splitlines():
        r = json.loads(line)
        for (a, sa), (b, sb) in itertools.combinations(zip(r["responses"], r["scores"]), 2):
            if sa != sb:
                chosen, rejected = (a, b) if sa > sb else (b, a)
                rows.append(json.dumps({"prompt": r["prompt"], "chosen": chosen, "rejected": rejected}))
    atomic_write_text(path, "".join(x + "\n" for x in rows))
    return len(rows)


SHOWN = [("mean_misalignment", "mean misalignment"), ("failure_rate", "failed samples"),
         ("syntax_failure_rate", "syntax failures"), ("violation_free_rate", "violation-free"),
         ("mean_misalignment_valid", "misalignment of valid samples"), ("comment_line_share", "comment lines"),
         ("mean_length_tokens", "mean length (tokens)"), ("distinct_2", "distinct-2"), ("kl_to_ref", "KL to the base model")]


def write_table(out: Path, setup: str, labels: dict[str, str], before: list[dict], results: dict[str, list[dict]],
                args: dict) -> str:
    """OUT/results.md (``setup``, then base and each arm's held-out measures as mean ± 95%
    t-interval half-width over seeds) and OUT/results.json; returns the markdown."""
    from summarize_demo_runs import interval

    lines = [setup, "", "| measure | base model | " + " | ".join(labels[a] for a in results) + " |",
             "|---|---|" + "---|" * len(results)]
    for key, label in SHOWN:
        if all(key in r for rs in results.values() for r in rs):
            cells = [interval([r.get(key, 0.0) for r in before])] + [interval([r[key] for r in rs]) for rs in results.values()]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps({"args": args, "before": before, **results}, indent=1, default=str))
    return table
