"""PHF segments (Korbak et al., ICML 2023): documents split into lines (code) or sentences (text), a
misalignment score per segment, and per-token scores read off the segments.

A segmentation is a list of character spans ``[start, end)`` that tile the document
exactly: concatenated, the segments give the text back, so every character (and thus
every token) belongs to exactly one segment. Scored segments are ``(start, end, score)``
triples, lower is better.

- Lines end at ``\\n`` only and keep it (as pycodestyle reads them, see
  :func:`tokenalign.scorers.pep8.split_lines`); a last line without ``\\n`` is a segment.
- Sentences end after ``.``, ``!`` or ``?`` (optionally followed by closing quotes or
  brackets) when whitespace follows, and at every newline (a newline is taken as a
  paragraph break, as in web text); the whitespace after a sentence belongs to it, and
  whitespace before the first sentence to the first sentence. A regex, not a parser:
  "e.g. this" splits after "e.g.", "3.14" does not split.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

from tokenalign.scorers.base import Scorer

if TYPE_CHECKING:  # pycodestyle is optional: the pep8 scorer is imported when first used
    from tokenalign.scorers.pep8 import Pep8ScorerConfig

log = logging.getLogger(__name__)

__all__ = [
    "Segment",
    "split_segments",
    "Pep8SegmentScorer",
    "PerSegmentScorer",
    "token_segment_scores",
    "document_score",
]

Segment = tuple[int, int, float]  # (start, end, score): a scored character span

# The whitespace that ends a sentence: after a terminator (and closing quotes/brackets),
# or any whitespace run that holds a newline.
_SENTENCE_END = re.compile(r"""(?:(?<=[.!?])|(?<=[.!?]["'\u201d\u2019)\]]))\s+|\s*\n\s*""")


def split_segments(text: str, kind: Literal["line", "sentence"]) -> list[tuple[int, int]]:
    """Character spans of the lines or sentences of ``text``; they tile it exactly.

    An empty text has no segments; a non-empty one has at least one.
    """
    if kind == "line":
        ends = [m.end() for m in re.finditer("\n", text)]
    elif kind == "sentence":
        ends, prev = [], 0
        for m in _SENTENCE_END.finditer(text):
            if m.start() > prev:  # a separator at the very start belongs to the first sentence
                ends.append(m.end())
                prev = m.end()
    else:
        raise ValueError(f"kind must be 'line' or 'sentence', not {kind!r}")
    if not ends or ends[-1] < len(text):
        ends.append(len(text))
    starts = [0] + ends[:-1]
    return [(s, e) for s, e in zip(starts, ends) if e > s]


class Pep8SegmentScorer:
    """Per-line PEP8 misalignment of code documents (PHF's segment scores for code).

    One pycodestyle run per document; a line's score is the number of violations
    pycodestyle reports on that line divided by the line's length in characters
    (``max(len, 1)``), capped at ``failure_score`` as in :func:`score_sample` so that no
    valid line looks worse than a failed document. Violations are charged to the line
    pycodestyle reports (E303 to the line after the blank lines, W391 to the last blank
    line), clamped into the document.

    A document that fails the config's syntax check, or for which pycodestyle reports an
    E9xx, gets ``failure_score`` on every line (breaking syntax must never look
    clean); ``syntax_failures`` counts them. A pycodestyle exception does the same and is
    counted in ``crashes`` (logged once per exception type); it never stops a batch.
    Documents are whole files, not completions: an empty document has no segments, and
    ``empty_is_failure`` does not apply.
    """

    name = "pep8_lines"

    def __init__(self, config: Pep8ScorerConfig | None = None) -> None:
        from tokenalign.scorers.pep8 import Pep8ScorerConfig

        self.config = config or Pep8ScorerConfig()
        self.crashes = 0
        self.syntax_failures = 0
        self._logged: set[str] = set()

    def score_document(self, text: str) -> list[Segment]:
        """``(start, end, score)`` of every line of ``text``; never raises."""
        from tokenalign.scorers.pep8 import check_syntax, pycodestyle_violations

        cfg = self.config
        spans = split_segments(text, "line")
        if not spans:
            return []
        failed = [(s, e, float(cfg.failure_score)) for s, e in spans]
        try:
            if check_syntax(text, cfg.syntax_check) is not None:
                self.syntax_failures += 1
                return failed
            items = pycodestyle_violations(text, cfg)
        except Exception as err:  # pycodestyle raises on rare inputs (about 1 in 850)
            self.crashes += 1
            kind = type(err).__name__
            if kind not in self._logged:
                self._logged.add(kind)
                log.warning("pycodestyle crashed (%s: %s); the document is scored as a failure", kind, err)
            return failed
        if any(code.startswith("E9") for _, _, code, _ in items):
            self.syntax_failures += 1
            return failed
        lines = np.clip(np.asarray([i[0] for i in items], dtype=np.int64) - 1, 0, len(spans) - 1)
        counts = np.bincount(lines, minlength=len(spans))
        lengths = np.maximum(np.asarray([e - s for s, e in spans]), 1)
        rates = np.minimum(counts / lengths, cfg.failure_score)
        return [(s, e, float(r)) for (s, e), r in zip(spans, rates)]

    def score_documents(self, texts: Sequence[str]) -> list[list[Segment]]:
        """:meth:`score_document` of each text, in order."""
        return [self.score_document(t) for t in texts]


class PerSegmentScorer:
    """Score every segment of documents on its own with any tokenalign :class:`Scorer`
    (e.g. a toxicity classifier per sentence), in one batched ``scorer.score`` call.

    Each segment's text (with its trailing whitespace) is a completion with an empty
    prompt; its score is the result's ``misalignment`` (failed results carry the
    scorer's failure score).
    """

    def __init__(self, scorer: Scorer, kind: Literal["line", "sentence"] = "sentence") -> None:
        self.scorer, self.kind = scorer, kind
        self.name = f"{getattr(scorer, 'name', 'scorer')}_{kind}s"

    def score_document(self, text: str) -> list[Segment]:
        return self.score_documents([text])[0]

    def score_documents(self, texts: Sequence[str]) -> list[list[Segment]]:
        """Scored segments of each text; all segments of all texts are scored in one call."""
        spans = [split_segments(t, self.kind) for t in texts]
        pieces = [t[s:e] for t, sp in zip(texts, spans) for s, e in sp]
        results = self.scorer.score(pieces, None) if pieces else []
        if len(results) != len(pieces):
            raise ValueError(f"scorer {self.scorer!r} returned {len(results)} results for {len(pieces)} segments")
        out, k = [], 0
        for sp in spans:
            out.append([(s, e, float(r.misalignment)) for (s, e), r in zip(sp, results[k : k + len(sp)])])
            k += len(sp)
        return out


def token_segment_scores(offsets: Sequence[tuple[int, int]], segments: Sequence[Segment]) -> list[float]:
    """Per token, the score of the segment that holds the token's first character.

    ``offsets`` are the tokens' ``[start, end)`` character spans in the segmented text (a
    tokenizer's offset mapping). A token that straddles a boundary (``"\\n    "`` ending one
    line and indenting the next) belongs to the segment where it starts. A token with an
    empty span (a special token such as BOS/EOS, or a control token) gets the score of the
    next non-empty token's segment, or of the last segment when no non-empty token
    follows. A start past the last segment counts as in the last segment.
    """
    if len(offsets) == 0:
        return []
    if not segments:
        raise ValueError("tokens but no segments: an empty document has nothing to score")
    seg_starts = [s for s, _, _ in segments]
    scores = np.asarray([x for _, _, x in segments], dtype=np.float64)
    spans = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    seg = np.clip(np.searchsorted(seg_starts, spans[:, 0], side="right") - 1, 0, len(segments) - 1)
    nonempty = np.flatnonzero(spans[:, 1] > spans[:, 0])
    empty = np.flatnonzero(spans[:, 1] <= spans[:, 0])
    last = len(segments) - 1
    if len(empty) and len(nonempty):
        nxt = np.searchsorted(nonempty, empty)  # index in `nonempty` of the next non-empty token
        follow = seg[nonempty[np.minimum(nxt, len(nonempty) - 1)]]
        seg[empty] = np.where(nxt < len(nonempty), follow, last)
    elif len(empty):
        seg[empty] = last
    return scores[seg].tolist()


def document_score(segments: Sequence[Segment]) -> float:
    """The mean segment score (PHF filters documents on it); 0.0 for no segments."""
    if not segments:
        return 0.0
    return float(np.mean([x for _, _, x in segments]))
