"""Automatic minimal editors: turn a worse response into a minimally edited better one.

The diff between a response and its edit says *where* the response was wrong (token labels from minimal
edits, Xu et al., ACL 2024);
:func:`edit_minimality` reports how minimal the edits are.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from typing import Any, Protocol

from tokenalign.registry import Registry

__all__ = ["EditResult", "Editor", "edit_minimality", "summarize_edits", "EDITORS", "register_editor", "make_editor"]

EDITORS: Registry = Registry("editor", builtins="tokenalign.editors.builtins")
register_editor = EDITORS.register


@dataclasses.dataclass
class EditResult:
    """One edit. A ``failed`` sample (fails the syntax check, editor crash, the editor
    would change the prompt) carries ``edited == original`` and ``changed == False``."""

    original: str
    edited: str
    changed: bool
    failed: bool = False
    failure: str | None = None


class Editor(Protocol):
    """Anything that minimally edits completions (given their prompts) to make them better."""

    name: str

    def edit(self, completions: Sequence[str], prompts: Sequence[str] | None = None) -> list[EditResult]: ...


def edit_minimality(pairs: Sequence[tuple[str, str]], tokenizer: Any) -> float:
    """Mean share of unchanged tokens between each original and its edit (1.0 = no change).

    Per pair, both texts are tokenized (no special tokens) and aligned with difflib over
    token ids; the share is ``2 * matched / (len(original) + len(edit))``, so deletions and
    insertions both count against minimality. Pairs where both texts are empty are skipped;
    NaN when no pair is left.
    """
    if not pairs:
        return float("nan")
    originals = tokenizer([a for a, _ in pairs], add_special_tokens=False)["input_ids"]
    edits = tokenizer([b for _, b in pairs], add_special_tokens=False)["input_ids"]
    shares = []
    for a, b in zip(originals, edits):
        if not a and not b:
            continue
        matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
        matched = sum(block.size for block in matcher.get_matching_blocks())
        shares.append(2 * matched / (len(a) + len(b)))
    return sum(shares) / len(shares) if shares else float("nan")


def summarize_edits(results: Sequence[EditResult]) -> dict[str, float]:
    """Counts and rates of changed, unchanged and failed edits, and failures by kind."""
    n = len(results)
    if n == 0:
        return {"n": 0}
    failed = [r for r in results if r.failed]
    out: dict[str, float] = {
        "n": n,
        "changed_rate": sum(1 for r in results if r.changed) / n,
        "unchanged_rate": sum(1 for r in results if not r.changed and not r.failed) / n,
        "failure_rate": len(failed) / n,
    }
    for r in failed:
        key = "n_failed_" + (r.failure or "other").split(":")[0].replace(" ", "_")
        out[key] = out.get(key, 0) + 1
    return out


def make_editor(spec: str) -> Editor:
    """The editor a config names: a registered name or ``package.module:attribute`` that
    is an editor class (built with no arguments) or instance (has ``edit``)."""
    from tokenalign.errors import ConfigError

    obj = EDITORS.get(spec)
    if isinstance(obj, type):
        obj = obj()
    if not callable(getattr(obj, "edit", None)):
        raise ConfigError(f"editor {spec!r} has no edit(completions, prompts) method")
    return obj
