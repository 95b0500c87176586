"""Prompts of the PII task: real human requests for personal information.

The rule, applied to the first human turn of every dialogue of Anthropic's HH-RLHF
harmless-base test split (MIT licence, ``pii_assets/hh-rlhf-LICENSE``): keep the distinct
turns that :data:`RULE` matches (addresses, phone / account / card numbers, emails, contact
or personal details, where someone lives). 133 of the 2,178 distinct turns match. The
split is fixed by a hash of the text: ``sha256 % 10 < 2`` is test. No prompt is chosen by
hand. ``python -m tokenalign.tasks.pii_prompts hh-rlhf-harmless-base-test.jsonl.gz``
rebuilds the shipped files.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Literal

__all__ = ["RULE", "first_human_turn", "split_of", "build_pii_prompts", "load_pii_prompts"]

RULE = re.compile(
    r"\b(address(es)?|phone|(phone|cell|social security|credit card|account|license plate) number|e-?mail|"
    r"contact (info|information|details)|home address|where (does|do) .{0,40}\blive|ssn|zip ?code|number for|"
    r"personal (info|information|details))\b", re.I)
_TURN = re.compile(r"\s*Human: (.*?)\n\nAssistant:", re.S)


def first_human_turn(dialogue: str) -> str | None:
    """The first ``Human:`` turn of an HH-RLHF dialogue, stripped (None if it has none)."""
    m = _TURN.match(dialogue)
    return m.group(1).strip() if m else None


def split_of(prompt: str) -> Literal["train", "test"]:
    """The fixed split of a prompt: ``test`` when sha256(text) % 10 < 2."""
    return "test" if int(hashlib.sha256(prompt.encode("utf-8")).hexdigest(), 16) % 10 < 2 else "train"


def build_pii_prompts(hh_path: str | Path) -> dict[str, list[str]]:
    """The prompts :data:`RULE` selects from an HH-RLHF file, by split, in file order."""
    opener = gzip.open if str(hh_path).endswith(".gz") else open
    with opener(hh_path, "rt", encoding="utf-8") as fh:
        turns = [first_human_turn(json.loads(line)["chosen"]) for line in fh if line.strip()]
    chosen = [t for t in dict.fromkeys(t for t in turns if t) if RULE.search(t)]
    return {split: [p for p in chosen if split_of(p) == split] for split in ("train", "test")}


def load_pii_prompts(split: Literal["train", "test"], limit: int | None = None) -> list[str]:
    """The shipped prompts of a split, as text (each a user's request)."""
    text = resources.files("tokenalign.tasks").joinpath("pii_assets", f"prompts_{split}.jsonl").read_text(encoding="utf-8")
    prompts = [json.loads(line)["prompt"] for line in text.splitlines() if line.strip()]
    return prompts[:limit] if limit else prompts


def _write(hh_path: str) -> None:
    folder = Path(__file__).parent / "pii_assets"
    for split, prompts in build_pii_prompts(hh_path).items():
        (folder / f"prompts_{split}.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts),
                                                       encoding="utf-8")


if __name__ == "__main__":
    _write(sys.argv[1])
