"""The scored corpus of the PHF objectives (Korbak et al., ICML 2023): documents -> token ids + token scores.

Each document is split into segments (lines of code, sentences of text), each segment is
scored by the task's scorer (misalignment, lower is better), and every token gets the
score of its segment. Conditional training instead tokenises the document segment by
segment, each after ``<|good|>`` or ``<|bad|>`` (or none, with probability
``drop_prob``); filtering keeps only documents whose mean segment score is <= t.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tokenalign.errors import TokenalignError

if TYPE_CHECKING:
    from tokenalign.objectives.phf import PHFSettings

log = logging.getLogger(__name__)

__all__ = ["ScoredDocument", "task_documents", "load_documents", "segment_scorer_for", "build_phf_documents"]


@dataclasses.dataclass
class ScoredDocument:
    text: str
    ids: list[int]  # what the LM trains on (with control tokens for conditional training)
    token_scores: list[float]  # the segment score of each id
    score: float  # the document's mean segment score


@functools.lru_cache(maxsize=1)
def _pep8_methods() -> tuple[str, ...]:
    from tokenalign.tasks.pep8.corpus import dedented_methods, read_corpus

    return tuple(m for _, source in read_corpus("train") for m in dedented_methods(source))


def task_documents(task_name: str, n: int, seed: int) -> list[str]:
    """The task's own corpus: for pep8, dedented methods of the standard library's train
    split (the shape of the task's prompts), ``n`` of them chosen with ``seed``."""
    if task_name != "pep8":
        raise TokenalignError(f"task {task_name!r} has no built-in corpus: set phf.corpus=FILE.jsonl")
    methods = list(_pep8_methods())
    random.Random(seed).shuffle(methods)
    return methods[:n]


def load_documents(path: str, n: int, seed: int) -> list[str]:
    """Documents of a ``text`` dataset (JSONL with a ``text`` field), ``n`` chosen with ``seed``."""
    from tokenalign.data import load_records

    texts = [r.text for r in load_records(path, "text").records]
    if not texts:
        raise TokenalignError(f"{path}: no documents")
    if len(texts) > n:
        texts = random.Random(seed).sample(texts, n)
    return texts


def segment_scorer_for(task, kind: str):
    """Scores of every segment of a document: pycodestyle once per document for pep8 (a
    line's violations per character), else the task's scorer on each segment."""
    from tokenalign.data.segments import PerSegmentScorer, Pep8SegmentScorer

    if task.name == "pep8" and kind == "line":
        return Pep8SegmentScorer()
    return PerSegmentScorer(task.scorer, kind)


def _tokenize_with_scores(tokenizer, text: str, segments, max_tokens: int) -> tuple[list[int], list[float]]:
    from tokenalign.data.segments import token_segment_scores

    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"][:max_tokens]
    scores = token_segment_scores([tuple(o) for o in enc["offset_mapping"][: len(ids)]], segments)
    return ids, scores


def _conditional_ids(tokenizer, text: str, segments, cfg: PHFSettings, control: tuple[int, int], rng: random.Random):
    from tokenalign.objectives.phf_math import conditional_token_ids

    good, bad = control
    ids = conditional_token_ids(tokenizer, text, segments, cfg.cond_threshold, cfg.drop_prob, good, bad, rng)[: cfg.max_tokens]
    # Token scores of the conditional format are not used by its (plain MLE) loss.
    return ids, [0.0] * len(ids)


def build_phf_documents(
    texts: Sequence[str],
    tokenizer,
    segment_scorer,
    cfg: PHFSettings,
    objective: str,
    seed: int = 0,
    control_ids: tuple[int, int] | None = None,
) -> list[ScoredDocument]:
    """Score, (filter,) and tokenise the corpus for ``objective``."""
    from tokenalign.data.segments import document_score

    if objective == "phf-cond" and control_ids is None:
        raise ValueError("phf-cond needs the control token ids (add_control_tokens)")
    scored = segment_scorer.score_documents(list(texts))
    rng = random.Random(seed)
    docs = []
    for text, segments in zip(texts, scored):
        score = document_score(segments)
        if objective == "phf-filter" and not score <= cfg.filter_threshold:  # a NaN score is dropped too
            continue
        if objective == "phf-cond":
            ids, token_scores = _conditional_ids(tokenizer, text, segments, cfg, control_ids, rng)
        else:
            ids, token_scores = _tokenize_with_scores(tokenizer, text, segments, cfg.max_tokens)
        if ids:
            docs.append(ScoredDocument(text, ids, token_scores, score))
    if not docs:
        raise TokenalignError(f"{objective}: no documents left to train on (phf.filter_threshold={cfg.filter_threshold})")
    kept = len(docs) / max(len(texts), 1)
    log.info("%s: %d of %d documents (%.1f%%), mean score %.5f", objective, len(docs), len(texts), 100 * kept,
             sum(d.score for d in docs) / len(docs))
    return docs
