"""Reward learning recovers hidden token scores; checkpoints resume exactly."""

from __future__ import annotations

import random

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2Model, PreTrainedTokenizerFast

from conftest import fit_until_killed

from tokenalign.evaluate.localization import localization_auc
from tokenalign.rewards.learn import LabelledExample, RankedExample, RewardLearnConfig, RewardLearner
from tokenalign.rewards.model import TokenRewardHeadConfig, TokenRewardModel
from tokenalign.rewards.scoring import ranking_accuracy, score_tokens

GOOD = [f"g{i}" for i in range(12)]
BAD = [f"b{i}" for i in range(4)]


def word_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "ctx"] + GOOD + BAD)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<s>")


def secret(word: str) -> float:
    return -1.0 if word.startswith("b") else 0.2


def sample_response(rng: random.Random) -> str:
    n = rng.randint(3, 7)
    return " " + " ".join(rng.choice(GOOD + BAD) for _ in range(n))


def make_lists(n: int, k: int, seed: int) -> list[RankedExample]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        responses = tuple(sample_response(rng) for _ in range(k))
        scores = tuple(sum(secret(w) for w in r.split()) for r in responses)
        out.append(RankedExample("ctx", responses, scores))
    return out


def tiny_model(vocab: int, bounding: str = "identity") -> TokenRewardModel:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=1, n_head=2, n_positions=32)
    return TokenRewardModel(GPT2Model(cfg), TokenRewardHeadConfig(hidden_size=64, bounding=bounding))


def test_ranked_lists_recover_hidden_token_scores():
    tok = word_tokenizer()
    train, held_out = make_lists(240, 3, seed=1), make_lists(40, 3, seed=2)
    model = tiny_model(len(tok))
    cfg = RewardLearnConfig(epochs=4, batch_size=16, lr=3e-3, aggregator="sum", mixed_precision="no")
    RewardLearner(model, tok, cfg).fit(train)
    prompts = [ex.prompt for ex in held_out for _ in ex.responses]
    responses = [r for ex in held_out for r in ex.responses]
    scored = score_tokens(model, tok, prompts, responses)
    blame = [[1.0 if w.startswith("b") else 0.0 for w in r.split()] for r in responses]
    auc = localization_auc([s.rewards for s in scored], blame)
    grouped = [scored[i * 3 : (i + 1) * 3] for i in range(len(held_out))]
    acc = ranking_accuracy(grouped, [ex.scores for ex in held_out], aggregator="sum")
    assert auc > 0.95, auc
    assert acc > 0.85, acc


def test_edit_labels_train_a_token_classifier():
    tok = word_tokenizer()
    rng = random.Random(0)
    train = []
    for _ in range(200):
        words = sample_response(rng).split()
        train.append(LabelledExample("ctx", " " + " ".join(words), tuple(0.0 if w.startswith("b") else 1.0 for w in words)))
    model = tiny_model(len(tok), bounding="centered_sigmoid")
    RewardLearner(model, tok, RewardLearnConfig(epochs=3, batch_size=16, lr=3e-3, mixed_precision="no")).fit(train)
    probe = [" g1 b2 g3 b0", " b1 g4"]
    scored = score_tokens(model, tok, ["ctx"] * 2, probe)
    blame = [[1.0 if w.startswith("b") else 0.0 for w in r.split()] for r in probe]
    assert localization_auc([s.rewards for s in scored], blame) == 1.0
    assert all(-1.0 <= r <= 1.0 for s in scored for r in s.rewards)


@pytest.mark.parametrize("lora", [False, True])
def test_checkpoint_resume_is_exact(tmp_path, lora):
    from tokenalign.utils.lora import LoraSettings

    def model():
        m = tiny_model(len(tok), "bounded")
        return m.add_lora(LoraSettings(enabled=True, r=4, alpha=8)) if lora else m

    tok = word_tokenizer()
    train = make_lists(48, 3, seed=3)
    cfg = RewardLearnConfig(epochs=2, batch_size=8, lr=1e-3, aggregator="avg", mixed_precision="no", save_every=3)
    full = RewardLearner(model(), tok, cfg, out_dir=tmp_path / "full")
    full.fit(train)

    # Kill a second run at step 4 (mid-epoch, one step after its step-3 checkpoint) ...
    part = RewardLearner(model(), tok, cfg, out_dir=tmp_path / "part")

    fit_until_killed(lambda kill: part.fit(train, on_step=kill), at=4, counter="step")
    ckpt = tmp_path / "part" / "checkpoint"
    assert '"step": 3' in (ckpt / "state.json").read_text()
    # ... and resume a fresh process-like learner from the checkpoint: same final weights.
    resumed = RewardLearner(TokenRewardModel.from_pretrained(ckpt / "model"), tok, cfg, out_dir=tmp_path / "resumed")
    assert resumed.model.has_lora == lora
    resumed.fit(train, resume_from=ckpt)
    assert resumed.step == full.step == 12
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    assert list(full_state) == list(resumed_state)
    for key in full_state:
        assert torch.allclose(full_state[key], resumed_state[key], atol=1e-6), key
    if lora:  # the adapters trained, the base did not
        fresh = model().state_dict()
        assert not torch.allclose(fresh["backbone.base_model.model.h.0.attn.c_attn.lora_B.default.weight"],
                                  full_state["backbone.base_model.model.h.0.attn.c_attn.lora_B.default.weight"])
        assert torch.equal(fresh["backbone.base_model.model.h.0.attn.c_attn.base_layer.weight"],
                           full_state["backbone.base_model.model.h.0.attn.c_attn.base_layer.weight"])


@pytest.mark.parametrize("lora", [False, True])
def test_reward_command_end_to_end_and_show(tmp_path, tiny_tokenizer, lora):
    """`tokenalign reward` on ranked data with a tiny backbone folder (full finetuning or
    LoRA adapters), then `tokenalign show`."""
    import json

    from transformers import GPT2Config, GPT2Model

    from tokenalign.cli import main

    backbone = tmp_path / "backbone"
    torch.manual_seed(0)
    GPT2Model(GPT2Config(vocab_size=len(tiny_tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=64)).save_pretrained(backbone)
    tiny_tokenizer.save_pretrained(backbone)
    data = tmp_path / "ranked.jsonl"
    rows = [{"prompt": "def f():\n", "responses": ["    return 1\n", "    return  1   \n", "  x=1\n"], "scores": [0, -1, -2]}] * 12
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    args = ["reward", "--set", f"backbone={backbone}", "--set", f"data.train={data}", "--set", "data.format=ranked",
            "--set", f"out_dir={out}", "--set", "head.hidden_size=32", "--set", "learn.epochs=2", "--set", "learn.batch_size=4",
            "--set", "learn.mixed_precision=no", "--set", f"lora.enabled={str(lora).lower()}"]
    assert main(args) == 0
    assert (out / "model" / "head.safetensors").is_file() and (out / "config.yaml").is_file()
    assert (out / "model" / "backbone-lora" / "adapter_config.json").is_file() == lora
    metrics = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2] and "eval_ranking_accuracy" in metrics[-1]
    html = tmp_path / "show.html"
    assert main(["show", "--reward-model", str(out / "model"), "--data", str(data), "--format", "ranked", "-o", str(html), "--limit", "2"]) == 0
    assert html.read_text().count("class='hm-example'") == 6
    # Re-running with the finished checkpoint present resumes (no extra epochs) instead of restarting.
    assert main(args) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
