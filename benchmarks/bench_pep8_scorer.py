"""Throughput of the pep8 scorer on realistic samples: whole functions of held-out stdlib files.

    python benchmarks/bench_pep8_scorer.py [--n 2000] [--processes 2]
"""

from __future__ import annotations

import argparse
import ast
import time

from tokenalign.scorers import summarize_scores
from tokenalign.scorers.pep8 import Pep8Scorer, Pep8ScorerConfig
from tokenalign.tasks.pep8.corpus import read_corpus
from tokenalign.tasks.pep8.pretrain import machine_description


def samples(n: int, max_lines: int = 40) -> list[str]:
    """Up to ``n`` whole top-level functions (at most ``max_lines`` lines) of held-out files."""
    out: list[str] = []
    for _, text in read_corpus("test") + read_corpus("validation"):
        lines = text.splitlines(keepends=True)
        for node in ast.parse(text).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno < max_lines:
                out.append("".join(lines[node.lineno - 1 : node.end_lineno]))
    return (out * (n // max(len(out), 1) + 1))[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    data = samples(args.n)
    print(f"machine: {machine_description()}; {len(data)} samples, mean {sum(map(len, data)) / len(data):.0f} chars")
    for processes in sorted({0, args.processes}):
        scorer = Pep8Scorer(Pep8ScorerConfig(processes=processes))
        t0 = time.perf_counter()
        results = scorer.score(data)
        dt = time.perf_counter() - t0
        s = summarize_scores(results)
        print(f"processes={processes}: {60 * len(data) / dt:,.0f} samples/minute "
              f"(mean misalignment {s['mean_misalignment']:.4f}, syntax failures {s['syntax_failure_rate']:.1%})")


if __name__ == "__main__":
    main()
