"""Throughput options of reward learning give the same numbers as the plain path.

- tokenizing once up front then collating gives exactly the batches of encode_for_reward;
- a shared-prompt row (prompt once, each response attending to it) gives each response
  the rewards of its own prompt + response row, hence the same loss and gradients;
- gradient checkpointing recomputes the backbone yet gives the same loss and gradients,
  dropout included.
"""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2Model

from tokenalign.rewards.batching import (
    collate_for_reward,
    encode_for_reward,
    pack_shared_prompt,
    tokenize_for_reward,
)
from tokenalign.rewards.learn import LabelledExample, RankedExample, RewardLearnConfig, RewardLearner, _set_checkpointing
from tokenalign.rewards.model import TokenRewardHeadConfig, TokenRewardModel

PROMPTS = ["def add(a, b):\n", "Human: hi\n\nAssistant:", "x = [1, 2, 3]\nfor i in x:\n" * 3]
LISTS = [
    ("def add(a, b):\n", ("    return a+b\n", "    return a + b\n", " pass")),
    ("Human: hi\n\nAssistant:", (" Hello there, friend.", " Go away.")),
    ("x = [1, 2, 3]\nfor i in x:\n" * 3, ("    print(i)\n", "    print( i )\n" * 4)),  # truncated at max_length 40
]
SCORES = [(1.0, 0.5, 0.0), (0.0, 1.0), (1.0, 0.0)]


def tiny_model(vocab: int, attn: str = "sdpa", dropout: float = 0.0, n_positions: int = 64) -> TokenRewardModel:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=n_positions, bos_token_id=0,
                     eos_token_id=0, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
                     attn_implementation=attn)
    model = TokenRewardModel(GPT2Model(cfg), TokenRewardHeadConfig(hidden_size=64, bounding="bounded"))
    with torch.no_grad():  # a head that is not ~0 everywhere, so differences would show
        for p in model.head.parameters():
            p.normal_(0, 0.5)
    return model


def ranked_examples() -> list[RankedExample]:
    return [RankedExample(p, r, s) for (p, r), s in zip(LISTS, SCORES)]


def test_collating_cached_tokens_gives_the_batches_of_encode_for_reward(tiny_tokenizer):
    prompts = [p for p, rs in LISTS for _ in rs]
    responses = [r for _, rs in LISTS for r in rs]
    for max_length in (None, 40, 12):
        direct = encode_for_reward(tiny_tokenizer, prompts, responses, max_length=max_length)
        p_ids, r_ids, offsets = tokenize_for_reward(tiny_tokenizer, prompts, responses)
        cached = collate_for_reward(p_ids, r_ids, offsets, pad_id=tiny_tokenizer.pad_token_id, max_length=max_length)
        assert direct.n_truncated == cached.n_truncated and (max_length != 12 or direct.n_truncated > 0)
        for name in ("input_ids", "attention_mask", "response_mask"):
            assert torch.equal(getattr(direct, name), getattr(cached, name)), name
        assert direct.response_ids == cached.response_ids and direct.response_spans == cached.response_spans
    # The learner's tokenize-once cache holds the very same ids (prompt once per list).
    learner = RewardLearner(tiny_model(len(tiny_tokenizer)), tiny_tokenizer, RewardLearnConfig(mixed_precision="no"))
    tokens = learner.tokenize(ranked_examples(), chunk=2)
    assert [list(t.prompt) for t in tokens] == [tiny_tokenizer(p)["input_ids"] for p, _ in LISTS]
    flat = [list(r) for t in tokens for r in t.responses]
    assert flat == [tiny_tokenizer(r, add_special_tokens=False)["input_ids"] for r in responses]
    enc = encode_for_reward(tiny_tokenizer, prompts, responses, max_length=learner.max_length)
    again = learner._collate([t.prompt for t in tokens for _ in t.responses], [r for t in tokens for r in t.responses])
    assert torch.equal(enc.input_ids, again.input_ids) and torch.equal(enc.response_mask, again.response_mask)


@pytest.mark.parametrize("attn,mask_format,multiple", [("sdpa", "bool", 1), ("eager", "additive", 1), ("sdpa", "bool", 32)])
def test_shared_prompt_row_gives_each_response_its_own_rewards(tiny_tokenizer, attn, mask_format, multiple):
    model = tiny_model(len(tiny_tokenizer), attn=attn).eval()
    pad = tiny_tokenizer.pad_token_id
    lists = [(tiny_tokenizer(p)["input_ids"], [tiny_tokenizer(r, add_special_tokens=False)["input_ids"] for r in rs])
             for p, rs in LISTS]
    packed = pack_shared_prompt(lists, pad_id=pad, max_length=40, mask_format=mask_format, pad_to_multiple_of=multiple)
    # the prompt is held once per list (the truncated third list needs two prompt copies)
    assert packed.input_ids.shape[0] == len(LISTS)
    if multiple == 1:
        assert packed.input_ids.shape[1] < max(sum(len(p) + len(r) for r in rs) for p, rs in lists)
    else:
        assert packed.input_ids.shape[1] % multiple == 0
    with torch.no_grad():
        rewards = model(**packed.model_inputs())
    dense = rewards.reshape(-1)[packed.token_index]
    for b, (p, rs) in enumerate(LISTS):
        alone = encode_for_reward(tiny_tokenizer, [p] * len(rs), list(rs), max_length=40)
        with torch.no_grad():
            ref = model(**alone.model_inputs())
        for j in range(len(rs)):
            want = ref[j][alone.response_mask[j]]
            assert packed.token_mask[b, j].sum() == len(want)
            torch.testing.assert_close(dense[b, j][packed.token_mask[b, j]], want, atol=1e-5, rtol=1e-5)
        assert not packed.token_mask[b, len(rs):].any()


def _loss_and_grads(model, tok, share_prompt: bool, examples, checkpointing: bool = False, train: bool = False):
    cfg = RewardLearnConfig(mixed_precision="no", share_prompt=share_prompt, max_length=40,
                            gradient_checkpointing=checkpointing)
    learner = RewardLearner(model, tok, cfg)
    if checkpointing:
        _set_checkpointing(model.backbone, True)
    model.train(train)
    model.zero_grad()
    torch.manual_seed(123)
    saved = [0]  # elements the autograd graph keeps for the backward pass

    def pack(t):
        saved[0] += t.numel()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        if isinstance(examples[0], LabelledExample):
            loss = learner.labelled_loss(examples)
        else:
            loss = learner.ranked_loss(examples, generator=torch.Generator().manual_seed(5))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    if checkpointing:
        _set_checkpointing(model.backbone, False)
    return loss.detach(), grads, saved[0]


def test_shared_prompt_loss_and_gradients_match_separate_rows(tiny_tokenizer):
    model = tiny_model(len(tiny_tokenizer))
    examples = ranked_examples()
    loss_a, grads_a, _ = _loss_and_grads(model, tiny_tokenizer, True, examples)
    loss_b, grads_b, _ = _loss_and_grads(model, tiny_tokenizer, False, examples)
    assert loss_a.item() > 0
    torch.testing.assert_close(loss_a, loss_b, atol=1e-5, rtol=1e-5)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 10
    for name in grads_a:  # float rounding only: differences tiny next to the gradient's own scale
        scale = grads_b[name].abs().max().item()
        assert (grads_a[name] - grads_b[name]).abs().max().item() <= 2e-5 * scale + 1e-7, name


@pytest.mark.parametrize("kind", ["ranked", "labelled"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_tokenizer, kind):
    model = tiny_model(len(tiny_tokenizer), dropout=0.1)
    if kind == "ranked":
        examples = ranked_examples()
    else:
        examples = [LabelledExample(p, rs[0], tuple(float(i % 2) for i in range(40))) for p, rs in LISTS]
    loss_a, grads_a, saved_a = _loss_and_grads(model, tiny_tokenizer, True, examples, train=True)
    loss_b, grads_b, saved_b = _loss_and_grads(model, tiny_tokenizer, True, examples, checkpointing=True, train=True)
    assert saved_b < saved_a / 3  # the blocks' activations were not kept but recomputed in backward
    torch.testing.assert_close(loss_a, loss_b, atol=1e-6, rtol=1e-6)  # same dropout masks on recompute
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-6, rtol=1e-5, msg=name)


def test_fit_with_checkpointing_and_shared_prompt_matches_plain_fit(tiny_tokenizer):
    examples = ranked_examples() * 4
    finals = {}
    for share, ckpt in ((False, False), (True, False), (True, True)):
        model = tiny_model(len(tiny_tokenizer))
        cfg = RewardLearnConfig(epochs=2, batch_size=3, lr=1e-3, mixed_precision="no", max_length=40,
                                share_prompt=share, gradient_checkpointing=ckpt)
        history = RewardLearner(model, tiny_tokenizer, cfg).fit(examples)
        assert not any(getattr(m, "gradient_checkpointing", False) for m in model.modules())  # switched off again
        assert not model.training
        finals[share, ckpt] = (history[-1]["train_loss"], [p.detach().clone() for p in model.parameters()])
    ref_loss, ref_params = finals[False, False]
    for key, (loss, params) in finals.items():
        assert loss == pytest.approx(ref_loss, rel=1e-4), key
        for a, b in zip(params, ref_params):
            torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-3)  # Adam steps are lr-sized: 1e-3


def test_gradient_checkpointing_on_a_backbone_without_it_is_a_config_error(tiny_tokenizer):
    from tokenalign.errors import ConfigError

    model = tiny_model(len(tiny_tokenizer))
    model.backbone.supports_gradient_checkpointing = False
    learner = RewardLearner(model, tiny_tokenizer, RewardLearnConfig(mixed_precision="no", gradient_checkpointing=True))
    with pytest.raises(ConfigError, match="gradient checkpointing"):
        learner.fit(ranked_examples())


def test_end_token_is_read_in_learning_and_in_use_alike(tiny_tokenizer):
    """head.end_token: the EOS follows every response — in the learner's cached ids, in
    encode_for_reward and so in score_tokens — with an empty span at the text's end; the
    learner's packed rewards equal score_tokens', the end token's included; an empty
    response has exactly one token (the end) and a defined score."""
    from tokenalign.rewards.scoring import score_tokens

    model = tiny_model(len(tiny_tokenizer)).eval()
    model.head_config.end_token = True
    eos = tiny_tokenizer.eos_token_id
    assert model.end_token_id(tiny_tokenizer) == eos
    p_ids, r_ids, offsets = tokenize_for_reward(tiny_tokenizer, ["x = ", "y = "], ["1 + 2\n", ""], end_token_id=eos)
    assert r_ids[0][-1] == eos and r_ids[0][:-1] == tiny_tokenizer("1 + 2\n", add_special_tokens=False)["input_ids"]
    assert r_ids[1] == [eos] and offsets[1] == [(0, 0)] and offsets[0][-1] == (6, 6)
    learner = RewardLearner(model, tiny_tokenizer, RewardLearnConfig(mixed_precision="no", max_length=40))
    examples = [RankedExample("x = ", ("1 + 2\n", "", "3\n"), (1.0, 0.0, 0.5))]
    tokens = learner.tokenize(examples)
    assert [list(r) for r in tokens[0].responses] == [
        tiny_tokenizer(r, add_special_tokens=False)["input_ids"] + [eos] for r in examples[0].responses]
    scored = score_tokens(model, tiny_tokenizer, ["x = "] * 3, list(examples[0].responses), max_length=40)
    assert [len(t.rewards) for t in scored] == [len(r) for r in tokens[0].responses]
    packed = pack_shared_prompt([(t.prompt, t.responses) for t in tokens], pad_id=tiny_tokenizer.pad_token_id,
                                max_length=40, mask_format="bool")
    with torch.no_grad():
        dense = model(**packed.model_inputs()).reshape(-1)[packed.token_index]
    for j, t in enumerate(scored):
        torch.testing.assert_close(dense[0, j][packed.token_mask[0, j]], torch.tensor(t.rewards), atol=1e-5, rtol=1e-5)
    assert torch.isfinite(learner.ranked_loss(examples, tokens=tokens))
