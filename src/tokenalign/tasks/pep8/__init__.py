"""The pep8 task: the embedded default of tokenalign.

Corpus: the interpreter's own standard library; tokenizer and a small GPT-2 trained on it
(shipped in ``assets/model``); prompts: function headers from held-out files; preference:
pycodestyle's violations per character; minimal editor: autopep8.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).parent / "assets"

# A function body ends where a new top-level statement starts.
STOP_STRINGS: tuple[str, ...] = ("\ndef ", "\nclass ", "\n@", "\nif __name__", "\n\n\n")

__all__ = ["ASSETS", "STOP_STRINGS", "base_model_path", "complete_lines", "load_base_model", "load_tokenizer"]


def complete_lines(completion: str, finished: bool) -> str:
    """What gets scored: a completion cut by the length limit keeps its complete lines only.

    A sample stopped mid-line (at ``max_new_tokens``) would otherwise fail the syntax check
    for a reason that is the sampler's, not the policy's. Finished samples are untouched,
    so an unclosed bracket that spans lines still fails.
    """
    if finished or "\n" not in completion:
        return completion
    return completion[: completion.rfind("\n") + 1]


def base_model_path() -> Path:
    """Folder of the shipped base model and tokenizer."""
    return ASSETS / "model"


def load_tokenizer():
    """The shipped tokenizer (a transformers fast tokenizer; ``<|endoftext|>`` is BOS/EOS)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_model_path())


def load_base_model(dtype=None):
    """The shipped base model in eval mode (fp32 unless ``dtype`` says otherwise), on the CPU."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(base_model_path(), dtype=dtype).eval()
