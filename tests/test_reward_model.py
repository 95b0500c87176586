"""TokenRewardModel on tiny causal and encoder-decoder backbones built from configs."""

from __future__ import annotations

import torch
import pytest
from transformers import GPT2Config, GPT2Model, T5Config, T5Model

from tokenalign.errors import TokenalignError
from tokenalign.rewards.batching import encode_for_reward
from tokenalign.rewards.model import TokenRewardHeadConfig, TokenRewardModel


def tiny_gpt2(vocab: int) -> GPT2Model:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=128, bos_token_id=0, eos_token_id=0)
    return GPT2Model(cfg).eval()


def tiny_t5(vocab: int) -> T5Model:
    torch.manual_seed(0)
    cfg = T5Config(
        vocab_size=vocab, d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16,
        decoder_start_token_id=1, pad_token_id=1, eos_token_id=0,
    )
    return T5Model(cfg).eval()


PROMPTS = ["def add(a, b):\n", "Human: hi\n\nAssistant:"]
RESPONSES = ["    return a+b\n", " Hello there, friend."]


def test_head_init_and_one_reward_per_response_token(tiny_tokenizer):
    model = TokenRewardModel(tiny_gpt2(len(tiny_tokenizer)), TokenRewardHeadConfig(hidden_size=64))
    assert torch.all(model.head[0].bias == -1e-4) and model.head[0].weight.abs().max() < 1e-3
    batch = encode_for_reward(tiny_tokenizer, PROMPTS, RESPONSES)
    rewards = model(**batch.model_inputs())
    assert rewards.shape == batch.input_ids.shape
    n_resp = [len(tiny_tokenizer(r, add_special_tokens=False)["input_ids"]) for r in RESPONSES]
    assert batch.response_mask.sum(-1).tolist() == n_resp
    # A near-zero head makes every bounded reward ~ r(0) ~= 0.549.
    assert torch.allclose(rewards[batch.response_mask], torch.full((sum(n_resp),), 0.5487), atol=1e-3)
    # Spans index the response text.
    for text, spans, ids in zip(RESPONSES, batch.response_spans, batch.response_ids):
        assert "".join(text[s:e] for s, e in spans) == text
        assert tiny_tokenizer.decode(ids) == text


def test_causal_reward_does_not_see_the_future(tiny_tokenizer):
    model = TokenRewardModel(tiny_gpt2(len(tiny_tokenizer)), TokenRewardHeadConfig(hidden_size=64, init_gain=1.0))
    a = encode_for_reward(tiny_tokenizer, ["x = "], ["1 + 2\n"])
    b = encode_for_reward(tiny_tokenizer, ["x = "], ["1 + 3\n"])
    ra, rb = model(**a.model_inputs()), model(**b.model_inputs())
    n_same = next(i for i, (p, q) in enumerate(zip(a.input_ids[0], b.input_ids[0])) if p != q)
    assert torch.allclose(ra[0, :n_same], rb[0, :n_same])
    assert not torch.allclose(ra[0, n_same:], rb[0, n_same:])


def test_right_padding_does_not_change_rewards(tiny_tokenizer):
    model = TokenRewardModel(tiny_gpt2(len(tiny_tokenizer)), TokenRewardHeadConfig(hidden_size=64, init_gain=1.0))
    both = encode_for_reward(tiny_tokenizer, PROMPTS, RESPONSES)
    r_both = model(**both.model_inputs())
    for i in range(2):
        alone = encode_for_reward(tiny_tokenizer, [PROMPTS[i]], [RESPONSES[i]])
        r_alone = model(**alone.model_inputs())
        assert torch.allclose(r_both[i][both.response_mask[i]], r_alone[0][alone.response_mask[0]], atol=1e-5)


def test_encoder_decoder_reads_response_in_decoder(tiny_tokenizer):
    model = TokenRewardModel(tiny_t5(len(tiny_tokenizer)), TokenRewardHeadConfig(hidden_size=64, init_gain=1.0))
    batch = encode_for_reward(tiny_tokenizer, PROMPTS, RESPONSES, is_encoder_decoder=True, decoder_start_token_id=1)
    assert batch.decoder_input_ids[:, 0].tolist() == [1, 1]
    rewards = model(**batch.model_inputs())
    assert rewards.shape == batch.decoder_input_ids.shape
    assert batch.response_mask[:, 0].sum() == 0  # the start position carries no reward
    with pytest.raises(ValueError, match="decoder_input_ids"):
        model(batch.input_ids, batch.attention_mask)


def test_truncation_keeps_prompt_tail_and_counts(tiny_tokenizer):
    batch = encode_for_reward(tiny_tokenizer, ["a b c d e f g h " * 4], ["x y z " * 4], max_length=20)
    assert batch.n_truncated == 1
    assert batch.attention_mask.sum().item() == 20
    assert batch.response_mask.sum().item() > 0


def test_save_and_load_round_trip(tmp_path, tiny_tokenizer):
    model = TokenRewardModel(tiny_gpt2(len(tiny_tokenizer)), TokenRewardHeadConfig(hidden_size=64, init_gain=1.0, bounding="sigmoid"))
    batch = encode_for_reward(tiny_tokenizer, PROMPTS, RESPONSES)
    before = model(**batch.model_inputs())
    model.save_pretrained(tmp_path / "rm", tokenizer=tiny_tokenizer)
    assert (tmp_path / "rm" / "head.safetensors").is_file()
    assert list((tmp_path / "rm" / "backbone").glob("*.safetensors"))
    loaded = TokenRewardModel.from_pretrained(tmp_path / "rm")
    assert loaded.head_config.bounding == "sigmoid"
    assert torch.allclose(loaded(**batch.model_inputs()), before, atol=1e-6)
    with pytest.raises(TokenalignError, match="not a tokenalign reward model"):
        TokenRewardModel.from_pretrained(tmp_path)


def test_inputs_longer_than_the_backbone_are_capped(tiny_tokenizer):
    from tokenalign.rewards.scoring import score_tokens

    model = TokenRewardModel(tiny_gpt2(len(tiny_tokenizer)), TokenRewardHeadConfig(hidden_size=16))
    assert model.max_positions == 128 and model.fit_length(512) == 128 and model.fit_length(64) == 64
    scored = score_tokens(model, tiny_tokenizer, ["x " * 200], ["y " * 100])  # > 128 tokens: no IndexError
    assert 0 < len(scored[0].rewards) <= 128


def test_lora_trains_adapters_and_head_only_and_round_trips(tmp_path, tiny_tokenizer):
    """LoRA on the backbone: the base weights stay frozen and bit-identical through a
    training step; saved, the backbone folder is the plain base model (adapters in
    ``backbone-lora/``), and loading gives the same rewards with trainable adapters."""
    from transformers import GPT2Model

    from tokenalign.utils.lora import LoraSettings

    base = tiny_gpt2(len(tiny_tokenizer))
    original = {k: v.clone() for k, v in base.state_dict().items()}
    model = TokenRewardModel(base, TokenRewardHeadConfig(hidden_size=64, init_gain=1.0, bounding="identity")).add_lora(
        LoraSettings(enabled=True, r=4, alpha=8, target_modules=["c_attn"]))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    assert any(n.startswith("head.") for n in trainable) and any("lora_B" in n for n in trainable)
    batch = encode_for_reward(tiny_tokenizer, PROMPTS, RESPONSES)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    sign = torch.tensor([[1.0], [-1.0]])  # raise the first response's rewards, lower the second's
    for _ in range(3):  # lora_B starts at 0: the adapters change the output from the second step on
        opt.zero_grad()
        (-(model(**batch.model_inputs()) * sign)[batch.response_mask].mean()).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        trained = model(**batch.model_inputs())
        plain = TokenRewardModel(tiny_gpt2(len(tiny_tokenizer)), model.head_config)
        plain.head.load_state_dict(model.head.state_dict())
        assert not torch.allclose(plain(**batch.model_inputs()), trained, atol=1e-6)  # the adapters matter

    model.save_pretrained(tmp_path / "rm", tokenizer=tiny_tokenizer)
    saved_base = GPT2Model.from_pretrained(tmp_path / "rm" / "backbone")
    for key, value in saved_base.state_dict().items():
        assert torch.equal(value, original[key]), key
    assert (tmp_path / "rm" / "backbone-lora" / "adapter_config.json").is_file()
    loaded = TokenRewardModel.from_pretrained(tmp_path / "rm")
    assert loaded.has_lora and any(p.requires_grad for n, p in loaded.named_parameters() if "lora_" in n)
    with torch.no_grad():
        assert torch.allclose(loaded(**batch.model_inputs()), trained, atol=1e-6)


def test_lora_on_chosen_layers_only(tiny_tokenizer):
    """``lora.layers`` adapts only those blocks (found under GPT-2's ``h`` list), so the
    backward pass stops above the others."""
    from tokenalign.utils.lora import LoraSettings

    model = TokenRewardModel(tiny_gpt2(len(tiny_tokenizer)), TokenRewardHeadConfig(hidden_size=8)).add_lora(
        LoraSettings(enabled=True, r=2, alpha=4, target_modules=["c_attn"], layers=[1]))
    adapted = {n.split(".h.")[1].split(".")[0] for n, p in model.named_parameters() if p.requires_grad and "lora_" in n}
    assert adapted == {"1"}
