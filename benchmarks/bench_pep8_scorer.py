"""Throughput of the pep8 scorer (and of the autopep8 editor) on realistic samples.

A sample is a function or method (dedented) of a held-out stdlib file, split as the pep8 task splits
it: the prompt is the header (``def`` line(s) and docstring), the completion is the body
cut at a line boundary after at most ``--max-chars`` characters (about 128 tokens, like a
length-limited LM sample; a cut inside a bracket is a syntax failure, as it would be).

    python benchmarks/bench_pep8_scorer.py [--n 1000] [--processes 2] [--edits 200]
"""

from __future__ import annotations

import argparse
import ast
import os
import platform
import time
from pathlib import Path

from tokenalign.editors.autopep8_editor import Autopep8Editor, summarize_edits
from tokenalign.scorers import summarize_scores
from tokenalign.scorers.pep8 import Pep8Scorer, Pep8ScorerConfig
from tokenalign.tasks.pep8.corpus import read_corpus


def samples(n: int, max_chars: int = 400) -> list[tuple[str, str]]:
    """Up to ``n`` distinct (prompt, completion) pairs from functions and methods (dedented)
    of held-out stdlib files; repeated if there are fewer."""
    out: list[tuple[str, str]] = []
    for _, text in read_corpus("test") + read_corpus("validation"):
        lines = text.splitlines(keepends=True)
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            chunk = lines[node.lineno - 1 : node.end_lineno]
            indent = node.col_offset
            if any(line.strip() and not line[:indent].isspace() for line in chunk[1:]) if indent else False:
                continue  # a multi-line string reaches left of the def: cannot dedent
            chunk = [line[indent:] if line.strip() else "\n" for line in chunk]
            body = node.body[1:] if ast.get_docstring(node) is not None and len(node.body) > 1 else node.body
            split = body[0].lineno - node.lineno
            prompt, completion = "".join(chunk[:split]), "".join(chunk[split:])
            if len(completion) > max_chars:
                completion = completion[: completion.rfind("\n", 0, max_chars) + 1] or completion[:max_chars]
            out.append((prompt, completion))
            if len(out) == n:
                return out
    return (out * (n // max(len(out), 1) + 1))[:n]


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="samples to score")
    parser.add_argument("--processes", type=int, default=2, help="also time a process pool of this size (0: no)")
    parser.add_argument("--edits", type=int, default=200, help="samples to edit with autopep8 (0: skip)")
    parser.add_argument("--max-chars", type=int, default=400)
    args = parser.parse_args()
    data = samples(args.n, args.max_chars)
    prompts, completions = [p for p, _ in data], [c for _, c in data]
    print(f"machine: {machine()}")
    print(f"{len(data)} samples: prompts {sum(map(len, prompts)) / len(data):.0f} chars, "
          f"completions {sum(map(len, completions)) / len(data):.0f} chars on average")
    for processes in sorted({0, args.processes}):
        scorer = Pep8Scorer(Pep8ScorerConfig(processes=processes, min_pool_batch=1))
        t0 = time.perf_counter()
        results = scorer.score(completions, prompts)
        dt = time.perf_counter() - t0
        s = summarize_scores(results)
        print(f"scorer processes={processes}: {60 * len(data) / dt:,.0f} samples/minute "
              f"(mean misalignment {s['mean_misalignment_valid']:.4f} viol/char over valid samples, "
              f"syntax failures {s['syntax_failure_rate']:.1%}, crashes {s['n_crashes']})")
    if args.edits:
        editor = Autopep8Editor()
        t0 = time.perf_counter()
        edits = editor.edit(completions[: args.edits], prompts[: args.edits])
        dt = time.perf_counter() - t0
        e = summarize_edits(edits)
        print(f"autopep8 editor: {60 * len(edits) / dt:,.0f} samples/minute "
              f"(changed {e['changed_rate']:.1%}, failed {e['failure_rate']:.1%})")


if __name__ == "__main__":
    main()
