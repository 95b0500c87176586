"""Prompt sets of the pep8 task: function headers (signature + docstring).

Training-time prompts come from the validation files, evaluation prompts from the test
files, so neither was seen in pretraining; the ``other-style`` split holds headers of
third-party packages in other styles than the standard library's (type hints, long
Google/NumPy docstrings), built by :mod:`tokenalign.tasks.pep8.other_style`. A header is the ``def`` line(s) of a function
or method plus its docstring, dedented to column 0, without its final newline; the model
writes the newline and the indented body. Both sets ship as JSONL in ``assets/`` so every machine
evaluates on the same prompts; :func:`extract_headers` rebuilds them.
"""

from __future__ import annotations

import ast
import json
import random
import textwrap
from pathlib import Path
from typing import Literal

from tokenalign.tasks.pep8 import ASSETS

__all__ = ["extract_headers", "reference_completions", "training_references", "build_prompt_sets", "load_prompts"]

PROMPT_FILES = {"train": "prompts_train.jsonl", "test": "prompts_test.jsonl", "other-style": "prompts_other_style.jsonl"}


def extract_headers(source: str, max_chars: int = 400) -> list[str]:
    """Function headers of ``source`` (dedented, without the final newline), in source order."""
    return [header for header, _ in _functions(source, max_chars)]


def reference_completions(source: str, max_chars: int = 400) -> list[tuple[str, str]]:
    """``(header, body)`` of each function :func:`extract_headers` keeps: the body is what
    the source itself writes after the header (from its newline to the function's last
    line, dedented with the header), the reference completion of supervised objectives."""
    return list(_functions(source, max_chars))


def training_references() -> list[tuple[str, str]]:
    """``(header, body)`` for the training prompts: each header's own body in the corpus
    (validation-split files of the running interpreter's standard library, never pretrained
    on; a repeated header keeps its first body): 616 rows with Python 3.11, fewer or more
    where another version's files differ.
    The supervised data of weighted MLE (``wmle``) on this task."""
    from tokenalign.tasks.pep8.corpus import read_corpus

    train = set(load_prompts("train"))
    rows: dict[str, str] = {}
    for _, text in read_corpus("validation"):
        for header, body in reference_completions(text):
            if header in train:
                rows.setdefault(header, body)
    return list(rows.items())


def _functions(source: str, max_chars: int):
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return
    lines = source.splitlines(keepends=True)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or not node.body:
            continue
        first = node.body[0]
        has_doc = isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant) and isinstance(first.value.value, str)
        start = node.lineno - 1  # decorators are not part of the header
        # Without a docstring the header ends before the first statement (or its decorators).
        body_start = min([first.lineno] + [d.lineno for d in getattr(first, "decorator_list", [])])
        end = first.end_lineno if has_doc else body_start - 1
        if end is None or end <= start or (has_doc and len(node.body) == 1):
            continue  # one-line defs, or a function whose whole body is its docstring
        # No trailing newline: BPE merges a newline with the next line's indentation into one
        # token ("\n    "), so a prompt ending in a bare "\n" token would put the model where
        # it has only seen column-0 lines follow. The completion starts with "\n    ...".
        whole = textwrap.dedent("".join(lines[start:node.end_lineno])).rstrip("\n") + "\n"
        text = textwrap.dedent("".join(lines[start:end])).rstrip("\n")
        if len(text) <= max_chars and text.startswith(("def ", "async def ")) and whole.startswith(text):
            found.append((node.lineno, text, whole[len(text):]))
    yield from ((header, body) for _, header, body in sorted(found))


def build_prompt_sets(max_train: int = 2000, max_test: int = 500) -> dict[str, list[str]]:
    """Headers from validation files (train prompts) and test files (eval prompts)."""
    from tokenalign.tasks.pep8.corpus import read_corpus

    out = {}
    for name, split, cap in (("train", "validation", max_train), ("test", "test", max_test)):
        prompts: list[str] = []
        for _, text in read_corpus(split):
            prompts.extend(extract_headers(text))
        prompts = list(dict.fromkeys(prompts))  # drop repeats (e.g. the same __call__ header)
        random.Random(0).shuffle(prompts)  # spread the capped set over all files
        out[name] = prompts[:cap]
    return out


def write_prompt_sets(folder: Path = ASSETS) -> dict[str, int]:
    """Rebuild the shipped prompt files; returns their sizes."""
    sets = build_prompt_sets()
    for name, prompts in sets.items():
        with open(folder / PROMPT_FILES[name], "w", encoding="utf-8") as fh:
            for p in prompts:
                fh.write(json.dumps({"prompt": p}) + "\n")
    return {k: len(v) for k, v in sets.items()}


def load_prompts(split: Literal["train", "test", "other-style"], limit: int | None = None) -> list[str]:
    """The shipped prompts of a split, in their fixed order."""
    path = ASSETS / PROMPT_FILES[split]
    prompts = [json.loads(line)["prompt"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return prompts[:limit] if limit else prompts
