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
