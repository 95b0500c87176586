"""What the pii scorer charges in text that holds no personal information, and in text a
user gave it: the false-positive examination of the pii task's scorer (scrubadub with the
offline detectors, ``tokenalign.scorers.pii``).

Three corpora, every entity counted by detector with examples:
1. code: the held-out standard-library functions of the pep8 task (URLs in docstrings,
   ``user@host`` strings, numbers that look like phones);
2. the human-preferred assistant answers of HH-RLHF harmless-base (real assistant text,
   read by hand: most hits there are not someone's personal information);
3. the prompt's own entities: the pii prompts that contain an entity (a URL or email the
   user wrote), answered by repeating the prompt, which the default scorer must not charge.

    python benchmarks/pii_false_positives.py   # ~1 minute, writes benchmarks/results/pii_false_positives.json
"""

from __future__ import annotations

import collections
import gzip
import json
import re
from pathlib import Path

from tokenalign.scorers.pii import OFFLINE_DETECTORS, PiiConfig, PiiScorer, make_scrubber

HH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
OUT = Path(__file__).parent / "results" / "pii_false_positives.json"


def stdlib_functions(limit: int = 2000) -> list[str]:
    """Function sources of the pep8 task's held-out stdlib files."""
    import ast

    from tokenalign.tasks.pep8.corpus import read_corpus

    out = []
    for _, text in read_corpus("test"):
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        out += [ast.get_source_segment(text, n) or "" for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
        if len(out) >= limit:
            break
    return [f for f in out[:limit] if f]


def hh_answers(limit: int = 2000) -> list[str]:
    """The last assistant answer of each chosen HH-RLHF harmless-base dialogue."""
    out = []
    with gzip.open(HH, "rt", encoding="utf-8") as fh:
        for line in fh:
            text = json.loads(line)["chosen"]
            out.append(re.split(r"\n\nAssistant: ", text)[-1].strip())
            if len(out) >= limit:
                break
    return out


def examine(name: str, texts: list[str], scrubber) -> dict:
    """scrubadub's raw hits and what the scorer charges of them, by detector, with examples."""
    from tokenalign.scorers.pii import pii_entities

    out = {"corpus": name, "texts": len(texts)}
    chars = sum(len(t) for t in texts)
    for part in ("raw", "charged"):
        by_detector: collections.Counter = collections.Counter()
        examples: dict[str, list[str]] = collections.defaultdict(list)
        flagged = 0
        for text in texts:
            hits = ([(f.detector_name or f.type, f.text) for f in scrubber.iter_filth(text)] if part == "raw"
                    else [(b.code, b.message) for b in pii_entities(scrubber, text)])
            flagged += bool(hits)
            for kind, hit in hits:
                by_detector[kind] += 1
                if len(examples[kind]) < 6:
                    examples[kind].append(hit[:160])
        out[part] = {"share_flagged": flagged / max(len(texts), 1), "entities_per_char": sum(by_detector.values()) / max(chars, 1),
                     "by_detector": dict(by_detector.most_common()), "examples": dict(examples)}
    return out


def prompt_entities() -> dict:
    """The pii prompts holding an entity, answered by echoing the prompt: charged by the
    scorer with ``ignore_prompt_entities`` on (default) and off."""
    from tokenalign.tasks.pii_prompts import load_pii_prompts

    prompts = load_pii_prompts("train") + load_pii_prompts("test")
    scrubber = make_scrubber(OFFLINE_DETECTORS)
    holding = [p for p in prompts if list(scrubber.iter_filth(p))]
    echoes = [f"You asked: {p}" for p in holding]
    on = PiiScorer().score(echoes, holding)
    off = PiiScorer(PiiConfig(ignore_prompt_entities=False)).score(echoes, holding)
    return {"prompts_with_entities": len(holding), "examples": holding[:6],
            "charged_with_ignore_prompt_entities": sum(r.n_violations for r in on),
            "charged_without": sum(r.n_violations for r in off)}


def main() -> None:
    scrubber = make_scrubber(OFFLINE_DETECTORS)
    record = {"detectors": list(OFFLINE_DETECTORS),
              "code": examine("stdlib functions (pep8 test split)", stdlib_functions(), scrubber),
              "hh_answers": examine("HH-RLHF harmless-base chosen answers", hh_answers(), scrubber),
              "prompt_entities": prompt_entities(),
              "command": "python benchmarks/pii_false_positives.py"}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    for part in ("code", "hh_answers"):
        for kind in ("raw", "charged"):
            r = record[part][kind]
            print(f"{record[part]['corpus']} ({kind}): {record[part]['texts']} texts, {r['share_flagged']:.1%} flagged, "
                  f"{r['entities_per_char']:.5f}/char, {r['by_detector']}")
    print("prompt entities:", {k: v for k, v in record["prompt_entities"].items() if k != "examples"})


if __name__ == "__main__":
    main()
