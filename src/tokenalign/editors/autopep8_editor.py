"""autopep8 as the minimal editor of the pep8 task.

The prompt and the completion are fixed together (indentation needs the context), with
autopep8's ``line_range`` restricted to the completion's lines; the edited completion is
what follows the prompt in the fixed text. If autopep8 changed the prompt anyway, the sample is marked failed: an edit that silently changes the prompt is
never returned. Samples that fail the syntax check are not edited (failed).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from collections.abc import Sequence

from tokenalign.editors.base import EditResult
from tokenalign.scorers.pep8 import check_syntax

log = logging.getLogger(__name__)

__all__ = ["Autopep8Config", "Autopep8Editor", "edit_minimality"]


@dataclasses.dataclass
class Autopep8Config:
    aggressive: int = 0
    max_line_length: int = 79
    select: list[str] = dataclasses.field(default_factory=list)
    ignore: list[str] = dataclasses.field(default_factory=list)


class Autopep8Editor:
    """Minimal PEP8 edits with ``autopep8.fix_code`` (in-process)."""

    name = "autopep8"

    def __init__(self, config: Autopep8Config | None = None) -> None:
        self.config = config or Autopep8Config()

    def _options(self) -> dict:
        opts: dict = {"aggressive": self.config.aggressive, "max_line_length": self.config.max_line_length}
        if self.config.select:
            opts["select"] = list(self.config.select)
        if self.config.ignore:
            opts["ignore"] = list(self.config.ignore)
        return opts

    def edit_one(self, completion: str, prompt: str = "") -> EditResult:
        import autopep8

        reason = check_syntax(prompt + completion, "tokenize")
        if reason is not None:
            return EditResult(completion, completion, False, True, reason)
        options = self._options()
        if prompt.endswith("\n"):
            # Only the completion's lines may change: the prompt is not the policy's doing.
            first = prompt.count("\n") + 1
            options["line_range"] = [first, max(first, (prompt + completion).count("\n") + 1)]
        try:
            fixed = autopep8.fix_code(prompt + completion, options=options)
        except Exception as err:  # autopep8 can crash on odd input: fail this sample only
            return EditResult(completion, completion, False, True, f"crash: {type(err).__name__}: {err}")
        if not fixed.startswith(prompt):
            return EditResult(completion, completion, False, True, "autopep8 changed the prompt")
        edited = fixed[len(prompt):]
        if not edited.strip():
            return EditResult(completion, completion, False, True, "autopep8 removed the whole completion")
        return EditResult(completion, edited, edited != completion)

    def edit(self, completions: Sequence[str], prompts: Sequence[str] | None = None) -> list[EditResult]:
        prompts = list(prompts) if prompts is not None else [""] * len(completions)
        return [self.edit_one(c, p) for c, p in zip(completions, prompts)]


def edit_minimality(pairs: Sequence[tuple[str, str]], tokenizer) -> float:
    """Mean share of the original's tokens left unchanged by the edit (1.0 = no change)."""
    shares = []
    for original, edited in pairs:
        a = tokenizer(original, add_special_tokens=False)["input_ids"]
        b = tokenizer(edited, add_special_tokens=False)["input_ids"]
        if not a:
            continue
        matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
        shares.append(sum(block.size for block in matcher.get_matching_blocks()) / len(a))
    return sum(shares) / len(shares) if shares else float("nan")
