"""Encoder-decoder policies (T5, BART built from configs): the prompt goes to the encoder, the
completion comes from the decoder. Sampling records the log-probs a teacher-forced forward
pass gives, ``token_logprobs`` and the value model read the batch as ``labels=`` would, the
trainer learns and resumes exactly, and ``tokenalign train`` / ``eval`` run on a T5 folder."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import LikedTokens, fit_until_killed
from tokenalign.objectives.ppo import PPOSettings
from tokenalign.policy.config import TrainConfig
from tokenalign.rollout.generate import SamplingSettings
from tokenalign.policy.trainer import PolicyTrainer
from tokenalign.policy.value import ValueModel
from tokenalign.rollout.batch import build_token_batch, token_logprobs
from tokenalign.rollout.generate import SamplingConfig, encode_prompt, generate

PROMPTS = ["def add(a, b):\n", "x", "class Point:\n    def __init__(self, x, y):\n", "import os\nimport sys\n",
           "for i in range(10):\n    ", "The quick brown fox"]


def build_t5(tokenizer, seed: int = 0):
    """A 2-layer, 32-wide T5 (relative positions; decoder starts from the pad token, as T5's)."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=4,
                   pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                   decoder_start_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    model = T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # T5's untied head is very peaked at this width: soften it
        model.lm_head.weight.mul_(0.1)
    return model


def build_bart(tokenizer, seed: int = 0):
    """A 1-layer, 32-wide BART (absolute positions: padding must not shift a prompt), whose
    decoder starts from EOS, as BART's; a logit bias on EOS ends samples at varied lengths."""
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(seed)
    eos = tokenizer.eos_token_id
    cfg = BartConfig(vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                     decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
                     pad_token_id=tokenizer.pad_token_id, eos_token_id=eos, bos_token_id=eos, decoder_start_token_id=eos,
                     forced_eos_token_id=None, forced_bos_token_id=None)
    model = BartForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        model.final_logits_bias[0, eos] = 1.5
    return model


BUILDERS = {"t5": build_t5, "bart": build_bart}


def _alone(model, prompt_ids, response_ids, temperature: float = 1.0) -> torch.Tensor:
    """Log-probs of a response from one unpadded teacher-forced forward pass (``labels=``)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids]), labels=torch.tensor([response_ids])).logits[0]
    return torch.log_softmax(logits.float() / temperature, -1).gather(-1, torch.tensor(response_ids)[:, None]).squeeze(-1)


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_samples_and_recorded_logprobs_equal_a_teacher_forced_forward(tiny_tokenizer, kind):
    """Prompt ids are the encoder's, generated ids the decoder's (with the EOS or the tokens
    of the stop string that ended them), stop strings match generated text only (most
    prompts hold the stop string), and the recorded log-probs equal an unpadded ``labels=``
    forward pass of each row within 1e-4, through padding of unequal prompts."""
    tok, model = tiny_tokenizer, BUILDERS[kind](tiny_tokenizer)
    eos, stop, t = tok.eos_token_id, "e", 0.7
    cfg = SamplingConfig(max_new_tokens=12, temperature=t, top_p=0.9, stop=[stop], seed=1, batch_size=7)
    samples = generate(model, tok, PROMPTS * 3, cfg, progress=False)
    ends = {"eos": 0, "stop": 0, "limit": 0}
    for s in samples:
        assert s.prompt_ids == encode_prompt(tok, s.prompt)
        assert s.generated_ids[: len(s.completion_ids)] == s.completion_ids and s.completion == tok.decode(s.completion_ids)
        assert stop not in s.completion
        if s.generated_ids and s.generated_ids[-1] == eos:
            ends["eos"] += 1
            assert s.finished and s.generated_ids == s.completion_ids + [eos]
        elif s.finished:
            ends["stop"] += 1
            assert stop in tok.decode(s.generated_ids)
        else:
            ends["limit"] += 1
            assert len(s.generated_ids) == 12 and stop not in tok.decode(s.generated_ids)
        assert s.logprobs is not None and len(s.logprobs) == len(s.generated_ids)
        if s.generated_ids:
            assert torch.allclose(torch.tensor(s.logprobs), _alone(model, s.prompt_ids, s.generated_ids, t), atol=1e-4)
    assert ends["stop"] and ends["limit"] and (ends["eos"] or kind == "t5"), ends
    # Matched across the prompt, a stop string in it would end its rows at the first token.
    assert any(stop in s.prompt and len(s.generated_ids) > 1 for s in samples)


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_token_logprobs_and_values_read_the_batch_as_labels_do(tmp_path, tiny_tokenizer, kind):
    """Each row of a padded batch (prompts of unequal lengths) gets the log-probs and
    entropies of its own unpadded ``labels=`` forward pass; the value model reads its
    backbone's decoder state before each response token."""
    from transformers import AutoModel

    tok, model = tiny_tokenizer, BUILDERS[kind](tiny_tokenizer)
    prompts = [encode_prompt(tok, p) for p in PROMPTS[:4]]
    responses = [[5, 6, 7], [8], [9, 10, 11, 12, 13], [tok.eos_token_id]]
    batch = build_token_batch(prompts, responses, tok.pad_token_id)
    assert len({len(p) for p in prompts}) > 1
    with torch.no_grad():
        out = token_logprobs(model, batch, with_entropy=True, temperature=0.5)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        alone = _alone(model, p, r, 0.5)
        assert torch.allclose(out["logprobs"][i, : len(r)], alone, atol=1e-5), i
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([p]), labels=torch.tensor([r])).logits[0].float() / 0.5, -1)
        assert torch.allclose(out["neg_entropy"][i, : len(r)], (logp.exp() * logp).sum(-1), atol=1e-5)

    model.save_pretrained(tmp_path)
    value = ValueModel(AutoModel.from_pretrained(tmp_path).eval())  # the encoder-decoder without its LM head
    torch.nn.init.normal_(value.head.weight)
    with torch.no_grad():
        values = value(batch)
        for i, (p, r) in enumerate(zip(prompts, responses)):
            start = model.config.decoder_start_token_id
            hidden = value.backbone(input_ids=torch.tensor([p]), decoder_input_ids=torch.tensor([[start] + r[:-1]])).last_hidden_state
            assert torch.allclose(values[i, : len(r)], value.head(hidden[0]).squeeze(-1), atol=1e-5), i


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_greedy_top_k_and_temperature(tiny_tokenizer, kind):
    """Greedy rows equal ``model.generate`` of each prompt alone; top-k 1 sampling is greedy;
    a lower temperature gives likelier samples."""
    tok, model = tiny_tokenizer, BUILDERS[kind](tiny_tokenizer)
    greedy = generate(model, tok, PROMPTS, SamplingConfig(max_new_tokens=8, greedy=True), progress=False)
    for s in greedy:
        alone = model.generate(input_ids=torch.tensor([s.prompt_ids]), max_new_tokens=8, do_sample=False,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)[0, 1:].tolist()
        assert s.generated_ids == alone  # one row: no padding
    top1 = generate(model, tok, PROMPTS, SamplingConfig(max_new_tokens=8, temperature=1.0, top_k=1, top_p=1.0, seed=5),
                    progress=False)
    assert [s.generated_ids for s in top1] == [s.generated_ids for s in greedy]

    def mean_logprob(temperature: float) -> float:
        cfg = SamplingConfig(max_new_tokens=8, temperature=temperature, top_p=1.0, seed=2)
        samples = generate(model, tok, PROMPTS * 4, cfg, progress=False)
        return sum(float(_alone(model, s.prompt_ids, s.generated_ids).mean()) for s in samples if s.generated_ids) / len(samples)

    assert mean_logprob(0.3) > mean_logprob(1.5) + 0.5


def _config(objective: str, **kw) -> TrainConfig:
    base = dict(objective=objective, iterations=3, prompts_per_iteration=6, samples_per_prompt=2, lr=1e-2, kl_coef=0.1,
                mixed_precision="no", save_every=0, sampling=SamplingSettings(max_new_tokens=6, batch_size=64),
                objective_settings=PPOSettings(epochs=2, minibatch_size=6), seed=0)
    base.update(kw)
    cfg = TrainConfig(**base)
    cfg.reward.placement = "token" if objective != "rloo" else "sequence"
    return cfg


def _trainer(cfg, tok, out_dir=None, policy=None, value=None):
    from transformers import T5Model

    policy = policy if policy is not None else build_t5(tok)
    if cfg.objective == "ppo" and value is None:
        value = ValueModel(T5Model(build_t5(tok, seed=1).config))
    return PolicyTrainer(cfg, policy, tok, LikedTokens(len(tok)), PROMPTS, ref_policy=build_t5(tok), value_model=value,
                         out_dir=out_dir)


@pytest.mark.parametrize("objective", ["reinforce", "rloo", "ppo"])
def test_trainer_updates_a_t5_policy_from_its_own_logprobs(tiny_tokenizer, objective):
    """A rollout of a policy equal to its reference takes the sampler's log-probs (equal to a
    fresh forward pass) and has KL 0; PPO's first minibatch (the whole rollout) is on-policy;
    updates move the weights and the rollout KL becomes positive."""
    trainer = _trainer(_config(objective, objective_settings=PPOSettings(epochs=1, minibatch_size=12)), tiny_tokenizer)
    ro = trainer.rollout(trainer.iteration_prompts(0), seed=0)
    mask = ro.batch.response_mask
    with torch.no_grad():
        fresh = token_logprobs(trainer.policy, ro.batch, temperature=trainer.cfg.sampling.temperature)["logprobs"]
    assert all(s.logprobs is not None for s in ro.samples) and mask.sum() > 0
    assert torch.allclose(ro.logprobs[mask], fresh[mask], atol=1e-4)
    assert (ro.logprobs - ro.ref_logprobs)[mask].abs().max() < 1e-4
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    stats = trainer.update(ro)
    if objective == "ppo":
        assert stats["clip_fraction"] == 0.0 and stats["approx_kl_old"] < 1e-10 and "value_loss" in stats
    assert torch.isfinite(torch.tensor(stats["loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters()))
    rows = trainer.fit(until=3)
    assert rows[-1]["kl"] != 0.0


def test_trainer_raises_the_toy_reward_of_a_t5_policy(tiny_tokenizer):
    trainer = _trainer(_config("reinforce", iterations=12, kl_coef=0.0, samples_per_prompt=4), tiny_tokenizer)
    rows = trainer.fit()
    first, last = sum(r["reward"] for r in rows[:3]) / 3, sum(r["reward"] for r in rows[-3:]) / 3
    assert last > first + 0.2, (first, last)


def test_killed_t5_ppo_run_resumes_exactly(tmp_path, tiny_tokenizer):
    from transformers import T5ForConditionalGeneration

    cfg = _config("ppo", iterations=3, save_every=1)
    full = _trainer(cfg, tiny_tokenizer, out_dir=tmp_path / "full")
    full.fit()
    part = _trainer(cfg, tiny_tokenizer, out_dir=tmp_path / "part")

    fit_until_killed(lambda kill: part.fit(on_iteration=kill), at=2)
    ckpt = tmp_path / "part" / "checkpoint"
    resumed = _trainer(cfg, tiny_tokenizer, out_dir=tmp_path / "part", policy=T5ForConditionalGeneration.from_pretrained(ckpt / "policy").eval(),
                       value=ValueModel.from_pretrained(ckpt / "value"))
    resumed.fit(resume_from=ckpt)
    assert resumed.iteration == full.iteration == 3
    for a, b in zip(full.unwrapped_policy.state_dict().values(), resumed.unwrapped_policy.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    for a, b in zip(full.value_model.state_dict().values(), resumed.value_model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    """A tiny T5 with the pep8 task's tokenizer, saved as a from_pretrained folder."""
    from tokenalign.tasks.pep8 import load_tokenizer

    tok = load_tokenizer()
    path = tmp_path_factory.mktemp("t5") / "model"
    build_t5(tok).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_loading_picks_the_seq2seq_class(t5_dir):
    from transformers import T5ForConditionalGeneration

    from tokenalign.tasks.pep8 import base_model_path
    from tokenalign.utils.models import is_encoder_decoder, load_causal_lm

    model, _ = load_causal_lm(str(t5_dir))
    assert isinstance(model, T5ForConditionalGeneration) and is_encoder_decoder(model)
    assert not is_encoder_decoder(load_causal_lm(str(base_model_path()))[0])


def _train_args(out, model, *extra):
    base = ["train", "--set", f"out_dir={out}", "--set", f"model={model}", "--set", "iterations=2",
            "--set", "prompts_per_iteration=2", "--set", "samples_per_prompt=2", "--set", "sampling.max_new_tokens=8",
            "--set", "eval.every=2", "--set", "eval.prompts=2", "--set", "eval.sampling.max_new_tokens=8",
            "--set", "mixed_precision=no", "--set", "ppo.epochs=1", "--set", "ppo.minibatch_size=2"]
    return base + [x for kv in extra for x in ("--set", kv)]


def test_train_resume_and_eval_commands_on_a_t5(tmp_path, t5_dir):
    """``tokenalign train`` (PPO with a T5 value model, also with LoRA on both) on a T5 folder:
    stops, resumes, saves a model that ``tokenalign eval`` loads and judges."""
    pytest.importorskip("pycodestyle")
    from transformers import AutoModelForSeq2SeqLM, T5ForConditionalGeneration

    from tokenalign.cli import main
    from tokenalign.utils.models import lm_auto_class

    out = tmp_path / "ppo"
    assert main(_train_args(out, t5_dir, "objective=ppo", "stop_after_iterations=1")) == 0
    assert json.loads((out / "checkpoint" / "state.json").read_text())["iteration"] == 1
    assert main(_train_args(out, t5_dir, "objective=ppo")) == 0  # resumes at iteration 1
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2] and "value_loss" in rows[2]
    assert json.loads((out / "summary.json").read_text())["finished"]
    assert isinstance(T5ForConditionalGeneration.from_pretrained(out / "model"), T5ForConditionalGeneration)

    lora = tmp_path / "lora"
    assert main(_train_args(lora, t5_dir, "objective=ppo", "lora.enabled=true", "iterations=1", "eval.every=0")) == 0
    assert (lora / "model" / "adapter_config.json").is_file()
    assert (lora / "checkpoint" / "value" / "backbone-lora" / "adapter_config.json").is_file()  # the T5 value model's
    assert lm_auto_class(lora / "model") is AutoModelForSeq2SeqLM  # judged by the adapter's base model

    ev = tmp_path / "eval"
    assert main(["eval", "--model", str(out / "model"), "--out", str(ev), "--set", "n_prompts=2", "--set", "samples_per_prompt=2",
                 "--set", "sampling.max_new_tokens=8"]) == 0
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["samples"] == 4 and "kl_to_reference" in metrics and "win_rate_vs_reference" in metrics


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_bf16_autocast_samples_scores_and_trains(tiny_tokenizer, kind):
    """Under ``mixed_precision: bf16`` (what ``auto`` picks on AVX512 CPUs) an encoder-decoder
    samples, is scored (reference log-probs under autocast) and takes a training step through
    the attention swap of ``utils/kernels.py``. T5 used to stop there: its relative-position
    bias reached the fp32 training pass in bf16 and SDPA refused the mask."""
    from tokenalign.objectives.reinforce import ReinforceSettings
    from tokenalign.utils.kernels import ATTENTION_NAME

    tok = tiny_tokenizer
    cfg = TrainConfig(objective="reinforce", iterations=1, prompts_per_iteration=2, samples_per_prompt=2, lr=1e-2, kl_coef=0.0,
                      mixed_precision="bf16", sampling=SamplingSettings(max_new_tokens=6), seed=0, progress=False,
                      objective_settings=ReinforceSettings())
    trainer = PolicyTrainer(cfg, BUILDERS[kind](tok), tok, LikedTokens(len(tok)), PROMPTS[:2], ref_policy=BUILDERS[kind](tok))
    policy = trainer.unwrapped_policy
    assert trainer.accelerator.mixed_precision == "bf16" and policy.config._attn_implementation == ATTENTION_NAME
    before = [p.detach().clone() for p in policy.parameters()]
    ro = trainer.rollout(trainer.iteration_prompts(0), seed=0)
    mask = ro.batch.response_mask
    assert mask.any() and torch.isfinite(ro.logprobs[mask]).all() and torch.isfinite(ro.ref_logprobs[mask]).all()
    stats = trainer.update(ro)
    assert torch.isfinite(torch.tensor(stats["loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))
