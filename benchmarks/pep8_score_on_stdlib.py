"""How the pep8 score judges real code: the held-out stdlib functions and methods (test
split), each scored as a completion of its own header, under the current and the legacy
score. A sound score fails (almost) none of them.

    python benchmarks/pep8_score_on_stdlib.py
"""

from __future__ import annotations

import ast
import collections
import json

from tokenalign.scorers.pep8 import LegacyPep8Scorer, Pep8Scorer
from tokenalign.tasks.pep8.corpus import read_corpus


def functions(source: str) -> list[tuple[str, str]]:
    """(header, body) of every function and method whose header is one line."""
    lines = source.splitlines(keepends=True)
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.body and node.body[0].lineno > node.lineno:
            if node.decorator_list or node.body[0].lineno != node.lineno + 1:
                continue
            indent = len(lines[node.lineno - 1]) - len(lines[node.lineno - 1].lstrip())
            header = "".join(line[indent:] for line in lines[node.lineno - 1 : node.lineno])
            body = "".join(line[indent:] if line.strip() else line for line in lines[node.lineno : node.end_lineno])
            out.append((header.rstrip("\n"), "\n" + body))
    return out


def main() -> None:
    pairs = {}
    for _, text in read_corpus("test"):
        try:
            for h, b in functions(text):
                pairs.setdefault((h, b), None)
        except SyntaxError:
            continue
    headers, bodies = zip(*pairs)
    report = {"functions": len(pairs)}
    for name, scorer in (("pep8", Pep8Scorer()), ("pep8-legacy", LegacyPep8Scorer())):
        results = scorer.score(list(bodies), list(headers))
        kinds = collections.Counter((r.failure or "").split(":")[0] for r in results if r.failed)
        report[name] = {"failed": sum(r.failed for r in results), "by_kind": dict(kinds),
                        "mean_misalignment_valid": sum(r.misalignment for r in results if not r.failed)
                        / max(sum(not r.failed for r in results), 1)}
        report[name]["examples"] = [{"header": h, "failure": r.failure} for h, r in zip(headers, results) if r.failed][:5]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
