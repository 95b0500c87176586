"""A seeds table of the demo: `tokenalign demo --task TASK` per alignment method and seed, at
the demo's budget (pep8: 16 iterations x 64 samples; pii: 12 iterations x 32 answers), then
mean and 95% t-interval over seeds (benchmarks/summarize_demo_runs.py).

Resumable across sessions: a run whose summary.json has its after-alignment evaluation (and,
with ``--judge``, the judge's win rate) is skipped, an unfinished one continues from its align
checkpoint. A finished run without the judge's win rate is evaluated again with the judge
(its alignment resumes at the end: no more training).

    python benchmarks/demo_seeds.py --out runs/pep8-seeds --methods pg pg-sequence token rloo
    python benchmarks/demo_seeds.py --task pii --out runs/pii-seeds --methods token rloo pg --judge runs/pii-judge/run/model
    python benchmarks/demo_seeds.py --out runs/pep8-seeds --methods pg --label pg-paper --set align.entropy_coef=0.125 ...
    python benchmarks/summarize_demo_runs.py runs/pep8-seeds
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("demo_seeds")


def finished(folder: Path, judged: bool = False) -> bool:
    """Whether ``folder`` has its after-alignment evaluation (and, if ``judged``, its judge's win rate)."""
    summary = folder / "summary.json"
    if not summary.is_file():
        return False
    entries = json.loads(summary.read_text())
    return "align_after" in entries and (not judged or "align_judge_win_rate" in entries)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="pep8")
    parser.add_argument("--out", default="runs/demo-seeds")
    parser.add_argument("--methods", nargs="+", default=["token", "rloo", "pg"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--judge", default="", help="a judge folder (benchmarks/pii_judge.py)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="more demo settings, key=value")
    parser.add_argument("--label", default="", help="run folders LABEL-SEED instead of METHOD-SEED (one method, other settings)")
    args = parser.parse_args(argv)
    if args.label and len(args.methods) != 1:
        parser.error("--label names the runs of one method")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    for seed in args.seeds:  # seeds outer: an interrupted table has every method at the same seeds
        for method in args.methods:
            folder = Path(args.out) / f"{args.label or method}-{seed}"
            if finished(folder, judged=bool(args.judge)):
                log.info("%s: done", folder)
                continue
            command = [sys.executable, "-m", "tokenalign", "demo", "--task", args.task, "--out", str(folder),
                       "--set", f"seed={seed}", "--set", f"align.method={method}"]
            command += ["--set", f"judge={args.judge}"] if args.judge else []
            for item in args.overrides:
                command += ["--set", item]
            log.info("running %s", " ".join(command))
            t0 = time.perf_counter()
            subprocess.run(command, check=True)
            log.info("%s: %.0f s", folder, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
