"""Shared fixtures: tiny tokenizers and models built from configs, offline, in seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TESTS_DIR = Path(__file__).parent
DATA_DIR = TESTS_DIR / "data"

_TRAIN_TEXT = [
    "def add(a, b):\n    return a + b\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "import os\nimport sys\n\nprint(os.path.join('a', 'b'))\n",
    "Human: what is the weather like today?\n\nAssistant: I do not know, but it looks sunny.",
    "The quick brown fox jumps over the lazy dog. Café, naïve, 東京, emoji 🙂.",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i)\n",
]


def build_tiny_tokenizer(vocab_size: int = 300):
    """A byte-level BPE tokenizer trained on a few lines, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_TRAIN_TEXT * 5, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|pad|>",
    )


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A fast byte-level BPE tokenizer (vocab 300) with offsets, pad and eos tokens."""
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Folder of small real data slices shipped with the tests (with their licences)."""
    return DATA_DIR


def build_tiny_lm(tokenizer, seed: int = 0, n_positions: int = 128):
    """A 2-layer, 32-wide GPT-2 on ``tokenizer``'s vocabulary, in eval mode (seeded init)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=n_positions,
                     eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return GPT2LMHeadModel(cfg).eval()


CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def save_tiny_chat_models(root: Path) -> Path:
    """A user's own setup in ``root``: ``lm/`` (a 2-layer GPT-2 on the tiny tokenizer, with a
    chat template) and ``seq-rm/`` (a sequence reward model on the same config)."""
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    tok = build_tiny_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=512, num_labels=1,
                        eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    for name, cls in (("lm", GPT2LMHeadModel), ("seq-rm", GPT2ForSequenceClassification)):
        cls(config).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return root


SMOLLM2_TOKENIZER = Path(__file__).parent / "assets" / "smollm2-tokenizer"


def save_tiny_smollm2(folder: Path, seed: int = 0) -> Path:
    """A 2-layer, 32-wide random Llama on SmolLM2-135M-Instruct's real tokenizer and chat
    template (EOS ``<|im_end|>``), saved in ``folder``: the pii task's model in tests."""
    import gzip

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_bytes(gzip.decompress((SMOLLM2_TOKENIZER / "tokenizer.json.gz").read_bytes()))
    tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), bos_token="<|im_start|>",
                                  eos_token="<|im_end|>", pad_token="<|im_end|>", unk_token="<|endoftext|>")
    tok.chat_template = (SMOLLM2_TOKENIZER / "chat_template.jinja").read_text()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512, tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def run_retrying_a_hang(command_for, env: dict, timeout: float):
    """``command_for(attempt)`` run in a subprocess; a run that hangs past ``timeout``, or
    whose rank aborts in C++ teardown after its work ("terminate called without an active
    exception"), is retried once: gloo on a loaded CPU has hung a rank about once in a dozen
    CI runs and aborted one at exit once (2026-12-07, 1 of 705 tests; 3 reruns alone passed),
    never reproduced alone. Any other failure is returned as it is. Returns (the finished
    process, the attempt that finished)."""
    import subprocess

    for attempt in range(2):
        try:
            done = subprocess.run(command_for(attempt), env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            if attempt == 1:
                raise
            continue
        if attempt == 0 and done.returncode != 0 and "terminate called without an active exception" in done.stderr:
            continue
        return done, attempt
    raise AssertionError("unreachable")


class LikedTokens:
    """Toy dense reward: +1 for every generated token in a fixed tenth of the vocabulary; the
    sequence score is their share."""

    def __init__(self, vocab_size: int) -> None:
        self.liked = set(range(3, vocab_size, 10))

    def __call__(self, samples):
        from tokenalign.policy.rewards import RewardOutput

        token = [[1.0 if t in self.liked else 0.0 for t in s.generated_ids] for s in samples]
        return RewardOutput([sum(r) / max(len(r), 1) for r in token], token)


class Killed(Exception):
    """Raised by :func:`fit_until_killed` to stop a run the way a kill would."""


def fit_until_killed(fit, at: int, counter: str = "iteration") -> None:
    """Call ``fit(callback)`` (the callback a trainer calls after each iteration, or a reward
    learner after each step with ``counter="step"``) and stop the run with :class:`Killed`
    once its ``counter`` reaches ``at``: what is on disk is then what a killed run leaves."""

    def kill(run) -> None:
        if getattr(run, counter) == at:
            raise Killed

    with pytest.raises(Killed):
        fit(kill)
