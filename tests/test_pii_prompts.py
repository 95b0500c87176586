"""The PII task's shipped prompts follow their stated rule and fixed split (no hand-picking),
with the source's licence beside them."""

from __future__ import annotations

import gzip
import json
from importlib import resources

from tokenalign.tasks.pii_prompts import RULE, build_pii_prompts, first_human_turn, load_pii_prompts, split_of


def test_shipped_prompts_follow_the_rule_and_the_split():
    train, test = load_pii_prompts("train"), load_pii_prompts("test")
    assert (len(train), len(test)) == (103, 30)
    assert not set(train) & set(test) and len(set(train + test)) == 133
    assert all(RULE.search(p) for p in train + test)
    assert all(split_of(p) == "train" for p in train) and all(split_of(p) == "test" for p in test)
    assert "MIT" in resources.files("tokenalign.tasks").joinpath("pii_assets", "hh-rlhf-LICENSE").read_text()


def test_the_builder_applies_the_rule_to_first_human_turns(tmp_path):
    dialogues = ["\n\nHuman: What is Kesha's email address?\n\nAssistant: I can't share that.",
                 "\n\nHuman: How do I bake bread?\n\nAssistant: Flour, water, yeast.",
                 "\n\nHuman: What is Kesha's email address?\n\nAssistant: No.",  # the same turn twice: once
                 "\n\nHuman: Where does my boss live?\n\nAssistant: I don't know."]
    path = tmp_path / "hh.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("".join(json.dumps({"chosen": d, "rejected": d}) + "\n" for d in dialogues))
    built = build_pii_prompts(path)
    assert sorted(built["train"] + built["test"]) == ["What is Kesha's email address?", "Where does my boss live?"]
    assert first_human_turn("no dialogue") is None
