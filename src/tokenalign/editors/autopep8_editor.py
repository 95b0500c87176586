"""autopep8 as the minimal editor of the pep8 task (``autopep8.fix_code``, in-process).

The prompt and the completion are fixed together, because the prompt (a function header)
is the context that makes the completion's indentation right or wrong. The edited
completion is then recovered from the fixed text:

1. Fix ``prompt + completion`` whole. If the fixed text starts with the prompt exactly,
   the edit is the rest. (This is the usual case: prompts are clean function headers.)
2. Otherwise autopep8 also changed the prompt (it had violations of its own). Fix again
   with autopep8's ``line_range`` restricted to the completion's lines; if the prompt is
   now intact, the edit is the rest. (``line_range`` turns off autopep8's whole-file
   fixes — re-indentation (E111, W191) among them — which is why it is not step 1.)
3. Otherwise the sample is failed (``"prompt: ..."``) and returned unchanged: an edit
   never silently changes the prompt.

Samples that are empty or fail the syntax check are not edited (failed), an autopep8
exception fails that sample only (``"crash: ..."``), and an edit that would delete the
whole completion is failed (``"empty: ..."``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Literal

from tokenalign.editors.base import EditResult, edit_minimality, register_editor, summarize_edits
from tokenalign.scorers.base import check_lengths
from tokenalign.scorers.pep8 import check_syntax

log = logging.getLogger(__name__)

__all__ = ["Autopep8Config", "Autopep8Editor", "edit_minimality", "summarize_edits"]


@dataclasses.dataclass
class Autopep8Config:
    """autopep8 options (its defaults: non-aggressive, 79 columns, its own ignore list)."""

    aggressive: int = 0
    max_line_length: int = 79
    select: list[str] = dataclasses.field(default_factory=list)
    ignore: list[str] = dataclasses.field(default_factory=list)
    syntax_check: Literal["tokenize", "compile", "none"] = "tokenize"
    # autopep8 re-runs pycodestyle until the source stops changing, by default without a
    # limit; a few model samples made it cycle for many minutes. Capped here.
    max_passes: int = 20


@register_editor("autopep8")
class Autopep8Editor:
    """Minimal PEP8 edits of completions, never touching their prompts."""

    name = "autopep8"

    def __init__(self, config: Autopep8Config | None = None) -> None:
        self.config = config or Autopep8Config()
        self.crashes = 0
        self._logged: set[str] = set()

    def _options(self) -> dict:
        opts: dict = {"aggressive": self.config.aggressive, "max_line_length": self.config.max_line_length,
                      "pep8_passes": self.config.max_passes}
        if self.config.select:
            opts["select"] = list(self.config.select)
        if self.config.ignore:
            opts["ignore"] = list(self.config.ignore)
        return opts

    def _fix(self, prompt: str, completion: str) -> str | None:
        """The edited completion, or None if autopep8 cannot fix it without touching the prompt."""
        import autopep8

        source = prompt + completion
        fixed = autopep8.fix_code(source, options=self._options())
        if fixed.startswith(prompt):
            return fixed[len(prompt):]
        first = prompt.count("\n") + 1  # the completion's first line (it may share it with the prompt)
        last = max(first, source.count("\n") + 1)
        fixed = autopep8.fix_code(source, options={**self._options(), "line_range": [first, last]})
        return fixed[len(prompt):] if fixed.startswith(prompt) else None

    def edit_one(self, completion: str, prompt: str = "") -> EditResult:
        """Edit one completion (see the module docstring for the strategy)."""

        def fail(reason: str) -> EditResult:
            return EditResult(completion, completion, False, True, reason)

        if not completion.strip():
            return fail("empty: nothing to edit")
        try:
            reason = check_syntax(prompt + completion, self.config.syntax_check)
            if reason is not None:
                return fail(reason)
            edited = self._fix(prompt, completion)
        except Exception as err:  # autopep8 can raise on odd input: fail this sample only
            self.crashes += 1
            kind = type(err).__name__
            if kind not in self._logged:
                self._logged.add(kind)
                log.warning("autopep8 raised %s: %s; the sample is left unedited", kind, err)
            return fail(f"crash: {kind}: {err}")
        if edited is None:
            return fail("prompt: autopep8 would change the prompt")
        if not edited.strip():
            return fail("empty: autopep8 would delete the whole completion")
        return EditResult(completion, edited, edited != completion)

    def edit(self, completions: Sequence[str], prompts: Sequence[str] | None = None) -> list[EditResult]:
        """Edit a batch, in order; one result per completion, failures included."""
        return [self.edit_one(c, p) for c, p in zip(completions, check_lengths(completions, prompts))]
