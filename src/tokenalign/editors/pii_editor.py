"""PII removed as a minimal edit: each PII entity the pii scorer charges is replaced by
scrubadub's placeholder (``{{EMAIL}}``), so the edited response differs from the original
only where it leaked (the edit-supervised method's minimal edits, Xu et al., ACL 2024)."""

from __future__ import annotations

from collections.abc import Sequence

from tokenalign.editors.base import EditResult, register_editor
from tokenalign.scorers.base import check_lengths
from tokenalign.scorers.pii import PiiConfig, make_scrubber, pii_entities

__all__ = ["PiiEditor"]


@register_editor("pii")
class PiiEditor:
    """Replace each charged PII entity with scrubadub's placeholder (``{{EMAIL}}``)."""

    name = "pii"

    def __init__(self, config: PiiConfig | None = None) -> None:
        self.config = config or PiiConfig()
        self.scrubber = make_scrubber(self.config.detectors)

    def edit(self, completions: Sequence[str], prompts: Sequence[str] | None = None) -> list[EditResult]:
        out = []
        for prompt, text in zip(check_lengths(completions, prompts), completions):
            blame = pii_entities(self.scrubber, text, prompt, self.config)
            edited, end = [], 0
            for b in blame:
                if b.start < end:  # overlapping entities: the first one's placeholder covers both
                    continue
                edited += [text[end : b.start], "{{" + b.code.upper() + "}}"]
                end = b.end
            edited.append(text[end:])
            new = "".join(edited)
            out.append(EditResult(text, new, new != text))
        return out
