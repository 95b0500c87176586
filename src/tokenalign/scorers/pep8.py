"""PEP8 misalignment with pycodestyle: violations per character of the completion (PHF).

The check runs on ``prompt + completion`` (the prompt — a function header — gives the
context) but only violations located in the completion are charged. Measured pitfalls
handled here (SPEC section 5):

- *Scorer gaming by syntax errors*: pycodestyle stops at source that does not tokenize and
  reports almost nothing, so an unclosed bracket would look clean. A sample that fails the
  syntax check (``syntax_check``: ``tokenize`` by default — samples cut at a token limit
  legitimately end inside a block, which ``compile`` rejects but ``tokenize`` accepts; or
  ``compile``; or ``none``), or for which pycodestyle reports an E9xx, is *failed* with
  ``failure_score`` (default 1.0 violations/char, worse than any real sample).
- *Checker crashes*: any exception on one sample fails that sample (``crash: ...``), is
  counted and logged once per kind, and never stops the batch.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import tokenize
from collections.abc import Sequence
from typing import Literal

from tokenalign.scorers.base import Blame, ScoreResult
from tokenalign.scorers.blame import violation_span

log = logging.getLogger(__name__)

__all__ = ["Pep8ScorerConfig", "Pep8Scorer", "check_syntax", "pycodestyle_violations"]


@dataclasses.dataclass
class Pep8ScorerConfig:
    """pycodestyle options and failure handling."""

    max_line_length: int = 79
    select: list[str] = dataclasses.field(default_factory=list)  # empty: pycodestyle's default set
    ignore: list[str] | None = None  # None: pycodestyle's default ignore list
    syntax_check: Literal["tokenize", "compile", "none"] = "tokenize"
    failure_score: float = 1.0
    empty_is_failure: bool = True
    processes: int = 0  # > 1: score in a process pool (pays off above a few thousand samples)


def check_syntax(source: str, mode: str) -> str | None:
    """None when ``source`` passes the check, else a one-line reason."""
    if mode == "none":
        return None
    try:
        if mode == "compile":
            compile(source, "<sample>", "exec", dont_inherit=True)
        else:
            for _ in tokenize.generate_tokens(io.StringIO(source).readline):
                pass
    except (SyntaxError, tokenize.TokenError, ValueError, IndentationError) as err:
        msg = err.args[0] if err.args else type(err).__name__
        return f"syntax: {type(err).__name__}: {msg}"
    return None


_STYLE_CACHE: dict[tuple, object] = {}


def _style(cfg: Pep8ScorerConfig):
    import pycodestyle

    key = (cfg.max_line_length, tuple(cfg.select), None if cfg.ignore is None else tuple(cfg.ignore))
    if key not in _STYLE_CACHE:
        kwargs: dict = {"max_line_length": cfg.max_line_length, "quiet": True}
        if cfg.select:
            kwargs["select"] = list(cfg.select)
        if cfg.ignore is not None:
            kwargs["ignore"] = list(cfg.ignore)
        _STYLE_CACHE[key] = pycodestyle.StyleGuide(**kwargs)
    return _STYLE_CACHE[key]


def pycodestyle_violations(source: str, cfg: Pep8ScorerConfig) -> list[tuple[int, int, str, str]]:
    """``(line 1-based, column 0-based, code, message)`` of every violation in ``source``."""
    import pycodestyle

    style = _style(cfg)

    class Collect(pycodestyle.BaseReport):
        def __init__(self, options) -> None:
            super().__init__(options)
            self.items: list[tuple[int, int, str, str]] = []

        def error(self, line_number, offset, text, check):
            code = text[:4]
            if self._ignore_code(code):
                return None
            self.items.append((line_number, offset, code, text[5:]))
            return code

    report = Collect(style.options)
    checker = pycodestyle.Checker(lines=source.splitlines(True), options=style.options, report=report)
    checker.check_all()
    return report.items


class Pep8Scorer:
    """Score code completions by pycodestyle violations per character (lower is better)."""

    name = "pep8"

    def __init__(self, config: Pep8ScorerConfig | None = None) -> None:
        self.config = config or Pep8ScorerConfig()
        self.crashes = 0
        self._logged: set[str] = set()

    def score_one(self, completion: str, prompt: str = "") -> ScoreResult:
        cfg = self.config
        n = len(completion)
        if cfg.empty_is_failure and not completion.strip():
            return ScoreResult(cfg.failure_score, n_chars=n, failed=True, failure="empty completion")
        source = prompt + completion
        reason = check_syntax(source, cfg.syntax_check)
        if reason is not None:
            return ScoreResult(cfg.failure_score, n_chars=n, failed=True, failure=reason)
        try:
            items = pycodestyle_violations(source, cfg)
        except Exception as err:  # pycodestyle itself crashes on rare inputs
            self.crashes += 1
            kind = f"{type(err).__name__}"
            if kind not in self._logged:
                self._logged.add(kind)
                log.warning("pycodestyle crashed (%s: %s); the sample is scored as a failure", kind, err)
            return ScoreResult(cfg.failure_score, n_chars=n, failed=True, failure=f"crash: {kind}: {err}")
        e9 = [i for i in items if i[2].startswith("E9")]
        if e9:
            return ScoreResult(cfg.failure_score, n_chars=n, failed=True, failure=f"syntax: {e9[0][2]} {e9[0][3]}")
        line_starts = _line_starts(source)
        offset = len(prompt)
        blame: list[Blame] = []
        charged = 0
        for line, col, code, message in items:
            span = violation_span(source, line_starts, line, col, code, cfg.max_line_length)
            start, end = span
            if end <= offset:
                continue  # in the prompt: not the completion's fault
            charged += 1
            blame.append(Blame(max(start, offset) - offset, end - offset, code, message))
        misalignment = charged / max(n, 1)
        return ScoreResult(misalignment, n_violations=charged, n_chars=n, blame=blame)

    def score(self, completions: Sequence[str], prompts: Sequence[str] | None = None) -> list[ScoreResult]:
        prompts = list(prompts) if prompts is not None else [""] * len(completions)
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
        if self.config.processes > 1 and len(completions) >= 256:
            from concurrent.futures import ProcessPoolExecutor

            chunk = max(1, len(completions) // (self.config.processes * 4))
            with ProcessPoolExecutor(self.config.processes) as pool:
                return list(pool.map(_score_in_worker, [self.config] * len(completions), completions, prompts, chunksize=chunk))
        return [self.score_one(c, p) for c, p in zip(completions, prompts)]


def _score_in_worker(config: Pep8ScorerConfig, completion: str, prompt: str) -> ScoreResult:
    return Pep8Scorer(config).score_one(completion, prompt)


def _line_starts(source: str) -> list[int]:
    starts = [0]
    for i, ch in enumerate(source):
        if ch == "\n":
            starts.append(i + 1)
    return starts
