"""Batched sampling from any Hugging Face causal LM or encoder-decoder LM, with the KV cache.

Prompts are left-padded (the attention mask drives position ids) and sampled in batches in
eval mode without gradients, by a loop that drops each row from the batch and the KV cache
as soon as it finishes (``_sample_pruned``; transformers' ``DynamicCache`` and logits
warpers), or with ``model.generate`` where that loop does not apply (``_can_prune``) or
``SamplingConfig.prune_finished`` is off. The loop's prefill computes real tokens only: the
batch's shared prompt head (a chat template's system turn) once, each row's own tokens in
groups of similar length (``_prefill``); under autocast its linear layers' weights are cast
once per batch (and in bf16 on a CPU prepacked for oneDNN: ``autocast_linear_weights``), not at
every step. Its KV cache stores keys transposed, which a decoding step's attention
(``utils.kernels.decode_attention``) reads without a copy. Each completion is cut at the first stop string;
its token ids are cut to match, so text and ids always agree.

An encoder-decoder (T5, BART) is sampled with ``model.generate``: the prompt goes to its
encoder (padding at the end, as ``rollout.batch.encoder_decoder_inputs`` feeds it in
training), the completion comes from its decoder, and stop strings are matched on the
decoder's generated text; the behaviour log-probs are recorded from the logits
``model.generate`` returns (``output_logits``).

Token healing (``SamplingSettings.token_healing``): BPE merges a newline with the next
line's indentation, so a prompt ending in "\n" ends at a token boundary the model never saw
before indented code, and it mostly answers with nothing. The sampler backs the prompt off
by its last token and lets the first sampled token be only one whose text starts with the
dropped text (``_FirstTokenPrefix``); the sample's text is still what follows the user's
prompt (``Sample.healed``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import weakref
from collections.abc import Sequence
from typing import Any, Literal

import torch

from tokenalign.utils.kernels import autocast_linear_weights

log = logging.getLogger(__name__)

__all__ = ["SamplingSettings", "SamplingConfig", "Sample", "StopOnStrings", "encode_prompt", "finish_row", "first_stop", "fit_prompts",
           "generate"]


@dataclasses.dataclass
class SamplingSettings:
    """How responses are sampled: the one sampling section of every config (train, align,
    eval, demo, red-teaming). The defaults sample the model's own distribution
    (temperature 1, no truncation), which is what training needs: log-probs are of the
    sampled distribution. Evaluation sections default to the PHF paper's evaluation
    settings instead (temperature 0.7, top-p 0.9).

    ``top_k=0`` and ``top_p=1.0`` switch those filters off; temperature 0 decodes greedily.
    Sampling runs in the model's own dtype, or under whatever autocast the caller set (the
    policy trainer samples under its mixed precision; with the preallocated KV cache, bf16
    autocast samples faster than fp32 on a CPU with bf16 matmuls, see
    ``benchmarks/bench_sampler.py``).
    """

    max_new_tokens: int = 128  # response length limit, in tokens
    temperature: float = 1.0  # softmax temperature; training log-probs use the same
    top_k: int = 0  # keep the k most likely tokens (0: off)
    top_p: float = 1.0  # nucleus sampling mass (1.0: off)
    batch_size: int = 64  # prompts per sampling batch
    # token healing of a decoder-only model's prompt: back it off by its last token and make
    # the first sampled token re-spell that token's text, so a prompt ending in "\n" samples
    # like one ending in ":" (BPE merges "\n" with the next line's indentation). "whitespace":
    # prompts whose last token ends in white space; "always": every prompt; "off": none.
    # Not for encoder-decoders or conditioned (PHF control token) sampling.
    token_healing: Literal["off", "whitespace", "always"] = "whitespace"
    # a prompt that does not fit beside max_new_tokens in the model's context: "truncate" keeps
    # its last tokens (counted, one warning per sampling call); "skip" leaves it out where the
    # jobs load prompts (``fit_prompts``, counted and warned)
    long_prompts: Literal["truncate", "skip"] = "truncate"
    # where samples are drawn: "hf", this module's KV-cache loop (or model.generate); "vllm", a
    # vLLM engine in this process on the model's device, built on first use and given the
    # policy's weights after every update (tokenalign.rollout.vllm_engine; pip install vllm).
    # Same Sample fields, other random streams; decoder-only, unconditioned sampling only.
    backend: Literal["hf", "vllm"] = "hf"
    # vllm only: the share of the device's memory the engine takes for its weights and KV cache
    # beside the trainer (of the machine's memory on a CPU); TRL's colocate default
    vllm_gpu_memory_utilization: float = 0.3

    @classmethod
    def for_evaluation(cls, **settings: Any) -> "SamplingSettings":
        """The PHF paper's evaluation settings (Korbak et al., ICML 2023: temperature 0.7,
        top-p 0.9), with ``settings`` changed."""
        return cls(**{"temperature": 0.7, "top_p": 0.9, **settings})


@dataclasses.dataclass
class SamplingConfig(SamplingSettings):
    """What one call of :func:`generate` needs: the settings plus the call's own stop
    strings and seed (set by whoever samples, never by a user's config). Built from a
    config section with :meth:`of`; its own defaults are the evaluation settings."""

    temperature: float = 0.7
    top_p: float = 0.9
    batch_size: int = 32
    stop: list[str] = dataclasses.field(default_factory=list)
    seed: int = 0
    greedy: bool = False
    # Drop rows from the batch (and the KV cache) as they finish, so the cost follows the
    # tokens actually generated (``_sample_pruned``); False samples with ``model.generate``.
    prune_finished: bool = True

    @classmethod
    def of(cls, settings: SamplingSettings, **call: Any) -> "SamplingConfig":
        """The settings of a config section plus this call's ``stop``, ``seed``, ... ."""
        base = {f.name: getattr(settings, f.name) for f in dataclasses.fields(SamplingSettings)}
        return cls(**{**base, **call})


@dataclasses.dataclass
class Sample:
    """One completion of one prompt."""

    prompt: str
    completion: str
    completion_ids: list[int]
    finished: bool  # ended by EOS or a stop string, not by the length limit
    # What the policy emitted, for training on it: the completion's ids plus the tokens that
    # ended it (the EOS token, or the tokens that spelled a stop string), so that the choice
    # to stop is learned too. ``completion_ids`` is always a prefix of it.
    generated_ids: list[int] = dataclasses.field(default_factory=list)
    prompt_ids: list[int] = dataclasses.field(default_factory=list)
    # A conditionally trained model's view (``tokenalign.objectives.conditioning``): its prompt
    # ids and generated ids with the control tokens; None for plain sampling.
    conditioned_ids: tuple[list[int], list[int]] | None = None
    # Token healing: the text of the prompt's last token, which ``prompt_ids`` leave out and
    # the first generated token re-spells (its text starts with it); "" when not healed. The
    # completion is the text after it: ``decode(completion_ids)[len(healed):]``.
    healed: str = ""
    # log π(token | context) of each generated id at the sampling temperature, without
    # top-k / top-p (what ``token_logprobs`` computes), taken from the sampler's own logits
    # so a rollout needs no second forward pass of the policy; None where the sampler did
    # not record them (``model.generate`` of a decoder-only model, conditioned sampling).
    # Not part of equality.
    logprobs: list[float] | None = dataclasses.field(default=None, compare=False, repr=False)


class StopOnStrings:
    """Per-row stopping when a stop string appears in the *generated* text.

    (transformers' own ``stop_strings`` also matches across the prompt boundary: a prompt
    ending in a newline would stop on a first generated "def ".) Only the last few
    generated tokens are decoded at each step, so the check is cheap. ``healed`` (one text per
    row, token healing) is prompt text the generated tokens re-spell: not searched. ``rows``
    (the pruned loop's running rows) says which rows ``input_ids`` holds.
    """

    def __init__(self, tokenizer, stops: Sequence[str], prompt_width: int, window: int = 12,
                 healed: Sequence[str] = ()) -> None:
        self.tokenizer, self.stops, self.start, self.window = tokenizer, list(stops), prompt_width, window
        self.healed = list(healed) if any(healed) else []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, rows: torch.Tensor | None = None,
                 **kwargs) -> torch.Tensor:
        # Special tokens (EOS, a conditioned model's control tokens) are not text.
        generated = input_ids[:, self.start :]
        tails = self.tokenizer.batch_decode(generated[:, -self.window :], skip_special_tokens=True)
        if self.healed and generated.shape[1] <= self.window:  # the tails begin with the healed text
            healed = self.healed if rows is None else [self.healed[r] for r in rows.tolist()]
            tails = [t[len(h) :] if t.startswith(h) else t for t, h in zip(tails, healed)]
        done = [any(s in t for s in self.stops) for t in tails]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def first_stop(text: str, stops: Sequence[str]) -> int:
    """Where the earliest stop string starts in ``text`` (-1 when none occurs)."""
    return min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)


def _cut_at_stop(tokenizer, ids: list[int], text: str, stops: Sequence[str], skip: int = 0) -> tuple[list[int], str, bool]:
    """``ids`` (decoding to ``text``) cut before the first stop string in ``text[skip:]``, and
    their text from ``skip`` on (``skip``: healed prompt text the first token re-spells)."""
    cut = first_stop(text[skip:], stops)
    if cut < 0:
        return ids, text[skip:], False
    k = len(ids)
    while k > 0 and len(tokenizer.decode(ids[:k])) > cut + skip:
        k -= 1
    return ids[:k], tokenizer.decode(ids[:k])[skip:], True


def finish_row(tokenizer, prompt: str, prompt_ids: list[int], ids: list[int], stops: Sequence[str], eos_id, pad_id,
                logprobs: list[float] | None = None, healed: str = "") -> Sample:
    """One generated row -> a Sample. A stop string wins over a later EOS (a stopped row is
    padded, and the pad token may be the EOS token). ``logprobs`` (one per id in ``ids``)
    are cut to the generated ids, which are always a prefix of ``ids``. ``healed``: the
    prompt text the first id re-spells (token healing), left out of the completion."""
    eos_at = ids.index(eos_id) if eos_id in ids else len(ids)
    emitted = ids[:eos_at]
    if eos_at == len(ids):
        while emitted and emitted[-1] == pad_id:
            emitted.pop()
    text = tokenizer.decode(emitted)
    if healed and emitted and not text.startswith(healed):  # a decoder that rewrites text (cleanup)
        log.warning("a healed sample's text %r does not start with the healed prompt text %r", text[:20], healed)
        healed = ""
    kept, text, stopped = _cut_at_stop(tokenizer, emitted, text, stops, len(healed))
    if stopped:  # train on the tokens up to the one that completed the stop string
        k, skip = len(kept) + 1, 0 if kept else len(healed)
        while k < len(emitted) and not any(s in tokenizer.decode(emitted[len(kept) : k])[skip:] for s in stops):
            k += 1
        generated = emitted[:k]
    elif eos_at < len(ids):
        generated = emitted + [eos_id]
    else:
        generated = emitted
    sample = Sample(prompt, text, kept, stopped or eos_at < len(ids), generated, prompt_ids, healed=healed)
    if logprobs is not None:
        sample.logprobs = logprobs[: len(generated)]
    return sample


class _TokenTexts:
    """A tokenizer's token texts (each id decoded alone, once) and, for each healed text seen,
    the ids whose text starts with it: a one-off scan of the vocabulary per distinct text."""

    def __init__(self, tokenizer) -> None:
        self.texts: list[str] = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        self._starting: dict[str, torch.Tensor] = {}

    def starting_with(self, prefix: str) -> torch.Tensor:
        if prefix not in self._starting:
            self._starting[prefix] = torch.tensor([i for i, t in enumerate(self.texts) if t.startswith(prefix)],
                                                  dtype=torch.long)
        return self._starting[prefix]


_TOKEN_TEXTS: "weakref.WeakKeyDictionary[Any, _TokenTexts]" = weakref.WeakKeyDictionary()


def _token_texts(tokenizer) -> _TokenTexts:
    """The tokenizer's :class:`_TokenTexts`, built on first use and kept as long as it lives."""
    if tokenizer not in _TOKEN_TEXTS:
        _TOKEN_TEXTS[tokenizer] = _TokenTexts(tokenizer)
    return _TOKEN_TEXTS[tokenizer]


def _healed_texts(tokenizer, encoded: Sequence[Sequence[int]], mode: str) -> list[str]:
    """For each prompt's ids, the text of the last token to back off and heal ("" for none):
    never the only token, a special token, or one that is not whole characters; in
    ``whitespace`` mode only a token ending in white space."""
    if mode == "off":
        return [""] * len(encoded)
    special = set(tokenizer.all_special_ids)
    texts = tokenizer.batch_decode([[e[-1]] if e else [] for e in encoded])
    return [t if len(e) > 1 and e[-1] not in special and t and "\ufffd" not in t
            and (mode == "always" or t[-1].isspace()) else ""
            for e, t in zip(encoded, texts)]


class _FirstTokenPrefix:
    """Logits processor of token healing: at the first step (``prompt_width`` ids in), a
    healed row may only sample tokens whose text starts with its healed text (``allowed``:
    the ids of each row, None for a row not healed); later steps are untouched."""

    def __init__(self, allowed: Sequence[torch.Tensor | None], prompt_width: int) -> None:
        self.allowed, self.start = list(allowed), prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] != self.start:
            return scores
        keep = torch.ones_like(scores, dtype=torch.bool)
        healed = [i for i, a in enumerate(self.allowed) if a is not None]
        keep[healed] = False
        rows = torch.cat([torch.full((len(self.allowed[i]),), i, dtype=torch.long) for i in healed])
        cols = torch.cat([self.allowed[i] for i in healed])
        inside = cols < scores.shape[-1]  # a tokenizer may have more ids than the model's head
        keep[rows[inside].to(scores.device), cols[inside].to(scores.device)] = True
        return scores.masked_fill(~keep, -torch.inf)


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Token ids a prompt is sampled from; an empty prompt (unconditional generation)
    starts from the BOS token (EOS where there is none)."""
    bos = tokenizer.bos_token or tokenizer.eos_token
    return tokenizer(prompt or bos, add_special_tokens=False)["input_ids"]


def _sample_hf(model, input_ids, attention, cfg: SamplingConfig, greedy: bool, extra_processors: list, criteria: list,
               eos_id, pad_id, max_new_tokens: int,
               logprob_temperature: float | None = None) -> tuple[list[list[int]], list[list[float]] | None]:
    """``model.generate`` on one padded batch: each row's generated ids (finished rows are
    padded with ``pad_id`` after their last token) and, when ``logprob_temperature`` is
    given, each id's log-prob under ``softmax(logits / logprob_temperature)`` from the raw
    logits ``model.generate`` returns (None otherwise). A decoder-only model's generated ids
    follow the prompt; an encoder-decoder's follow its decoder start token."""
    from transformers import LogitsProcessorList, StoppingCriteriaList

    from tokenalign.utils.models import is_encoder_decoder

    record = logprob_temperature is not None
    kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=eos_id, use_cache=True,
                  return_dict_in_generate=True, output_logits=record)
    if greedy:
        kwargs.update(do_sample=False)
    else:
        # top_k=0 and top_p=1.0 are passed, not left out: a model's generation_config
        # may carry its own defaults (top_k=50 is common) that would apply silently.
        kwargs.update(do_sample=True, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
    if criteria:
        kwargs.update(stopping_criteria=StoppingCriteriaList(criteria))
    if extra_processors:
        kwargs.update(logits_processor=LogitsProcessorList(extra_processors))
    out = model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
    generated = out.sequences[:, 1 if is_encoder_decoder(model) else input_ids.shape[1] :]
    if not record:
        return generated.tolist(), None
    # One [rows, vocab] tensor of raw logits per step: normalised a step at a time.
    logprobs = [torch.log_softmax(step.float() / logprob_temperature, dim=-1).gather(-1, generated[:, k : k + 1])
                for k, step in enumerate(out.logits)]
    return generated.tolist(), torch.cat(logprobs, dim=1).tolist() if logprobs else [[] for _ in range(len(generated))]


# generation_config fields that make ``model.generate`` add logits processors of its own;
# a model that sets any of them is sampled with ``model.generate``, so nothing is dropped.
_GENERATION_EXTRAS = (
    "guidance_scale", "sequence_bias", "encoder_repetition_penalty", "repetition_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "min_length", "min_new_tokens", "forced_bos_token_id",
    "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens",
    "begin_suppress_tokens", "top_h", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "watermarking_config",
    "num_beams", "num_return_sequences",
)


def _can_prune(model) -> bool:
    """Whether ``_sample_pruned`` can sample ``model``: a decoder-only LM that takes position
    ids and a ``DynamicCache`` of plain full-attention layers (rows can be selected), with a
    generation_config that adds no logits processors of its own."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    from tokenalign.utils.models import forward_parameters

    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    params = forward_parameters(model)
    if "position_ids" not in params or _cache_kwarg(params) is None:
        return False
    try:
        layers = DynamicCache(config=config).layers
    except Exception:  # noqa: BLE001 - a config DynamicCache cannot describe: use model.generate
        return False
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return False
    return not _generation_extras(model)


def _generation_extras(model) -> list[str]:
    """The ``_GENERATION_EXTRAS`` fields ``model``'s generation_config sets."""
    from transformers import GenerationConfig

    own, default = getattr(model, "generation_config", None), GenerationConfig()
    if own is None:
        return []
    return [k for k in _GENERATION_EXTRAS if getattr(own, k, None) != getattr(default, k, None)]


def _cache_kwarg(params) -> str | None:
    """The name a model's forward takes its KV cache by (``cache`` in transformers 5)."""
    return next((name for name in ("cache", "past_key_values") if name in params), None)


def _processors(cfg: SamplingConfig, greedy: bool, extra_processors: list):
    """The logits processors ``model.generate`` would apply, in its order: the extra ones
    (e.g. conditioning) first, then temperature, top-k and top-p when sampling."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    processors = LogitsProcessorList(extra_processors)
    if not greedy:
        if cfg.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(cfg.temperature))
        if cfg.top_k:
            processors.append(TopKLogitsWarper(top_k=cfg.top_k))
        if cfg.top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p=cfg.top_p))
    return processors


def _drop_padding_columns(cache, mask: torch.Tensor) -> torch.Tensor:
    """Drop the leading columns that are padding in every running row (left padding a
    finished row's longer prompt needed) from the attention mask and the cache's layers."""
    lead = int(mask.argmax(-1).min())  # a row's mask is 0...0 1...1: argmax is its first real column
    if lead == 0:
        return mask
    for layer in cache.layers:
        if layer.is_initialized:
            layer.drop_leading(lead)
    return mask[:, lead:]


@functools.cache
def _cache_layer_class():
    """A ``DynamicLayer`` whose keys and values live in buffers allocated once for the whole
    sample: appending a token writes in place, where ``DynamicLayer`` copies the whole cache
    with ``torch.cat`` at every step (a quarter of the sampling time of the pep8 model on a
    CPU). ``keys`` / ``values`` are views of the filled part, as attention expects.

    ``transposed_keys`` stores keys as [rows, heads, dim, positions] (``keys`` is then a
    transposed view): a decoding step's scores (``utils.kernels.decode_attention``) are a
    matmul that reads them contiguously, without the copy a strided operand costs."""
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        def __init__(self, capacity: int, transposed_keys: bool = False) -> None:
            super().__init__()
            self.capacity, self.length, self.transposed = capacity, 0, transposed_keys

        def _new(self, keys: torch.Tensor, values: torch.Tensor, rows: int, make) -> None:
            """Buffers for ``rows`` rows made by ``make`` (``new_empty`` / ``new_zeros``), heads,
            dim and dtype as ``keys`` / ``values`` [rows, heads, positions, dim]."""
            h, d = keys.shape[1], keys.shape[-1]
            shape = (rows, h, d, self.capacity) if self.transposed else (rows, h, self.capacity, d)
            self._keys = make(keys, shape)
            self._values = make(values, (rows, values.shape[1], self.capacity, values.shape[-1]))
            self.device, self.is_initialized = keys.device, True

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            self._new(key_states, value_states, key_states.shape[0], torch.Tensor.new_empty)

        def _views(self) -> None:
            if self.transposed:
                self.keys = self._keys[..., : self.length].transpose(-1, -2)
            else:
                self.keys = self._keys[:, :, : self.length]
            self.values = self._values[:, :, : self.length]

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            if end > self.capacity:  # the loop feeds at most prompt width + max_new_tokens
                raise RuntimeError(f"KV cache buffer of {self.capacity} positions cannot take {end}")
            self.write(slice(None), end, key_states, value_states)
            self.length = end
            self._views()
            return self.keys, self.values

        def reserve(self, rows: int, length: int, keys: torch.Tensor, values: torch.Tensor) -> None:
            """Zeroed buffers for ``rows`` rows of ``length`` positions, heads, dim and dtype as
            ``keys`` / ``values``: the columns a prefill leaves unwritten are masked, and finite."""
            self._new(keys, values, rows, torch.Tensor.new_zeros)
            self.length = length
            self._views()

        def fill(self, keys: torch.Tensor, values: torch.Tensor) -> None:
            """Start from ``keys`` / ``values`` ([rows, heads, positions, dim])."""
            self.reserve(keys.shape[0], keys.shape[-2], keys, values)
            self.write(slice(None), keys.shape[-2], keys, values)

        def write(self, rows: torch.Tensor | slice, end: int, keys: torch.Tensor, values: torch.Tensor) -> None:
            """Write ``keys`` / ``values`` ([rows, heads, positions, dim]) of ``rows`` so that
            they end at column ``end``."""
            start = end - keys.shape[-2]
            if self.transposed:
                self._keys[rows, :, :, start:end] = keys.transpose(-1, -2)
            else:
                self._keys[rows, :, start:end] = keys
            self._values[rows, :, start:end] = values

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self.is_initialized:  # index_select: ~7x faster than indexing on a CPU
                self._keys, self._values = self._keys.index_select(0, indices), self._values.index_select(0, indices)
                self._views()

        def drop_leading(self, lead: int) -> None:
            """Forget the first ``lead`` positions of every row (padding in all of them)."""
            self._keys = self._keys[..., lead:] if self.transposed else self._keys[:, :, lead:]
            self._values = self._values[:, :, lead:]
            self.capacity -= lead
            self.length -= lead
            self._views()

    return PreallocatedLayer


def _draw(scores: torch.Tensor) -> torch.Tensor:
    """One token per row from ``softmax(scores)`` by inverse-CDF sampling: a uniform draw
    located in the row's cumulative distribution (float64, so rounding cannot move mass).
    Exactly a categorical draw, about 15x cheaper than ``torch.multinomial`` on a CPU
    (``benchmarks/bench_sampler.py``); tokens with zero probability (filtered to -inf) are
    never drawn."""
    cdf = torch.softmax(scores, dim=-1).cumsum(dim=-1, dtype=torch.float64)
    u = torch.rand((scores.shape[0], 1), dtype=torch.float64, device=scores.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_(max=scores.shape[-1] - 1).squeeze(1)


def _shared_prefix(input_ids: torch.Tensor, attention: torch.Tensor) -> int:
    """How many leading tokens every left-padded prompt of the batch shares (a chat template's
    system turn), at most the shortest prompt's length less one: each row keeps a token of
    its own, whose logits start its sample."""
    lengths = attention.long().sum(-1)
    shortest = int(lengths.min())
    if input_ids.shape[0] < 2 or shortest < 2:
        return 0
    cols = (input_ids.shape[1] - lengths)[:, None] + torch.arange(shortest - 1, device=input_ids.device)
    heads = input_ids.gather(1, cols)
    return int((heads == heads[:1]).all(0).long().cumprod(0).sum())


def _chunks(lengths: list[int], waste: float = 1.25, max_positions: int = 4096) -> list[list[int]]:
    """Rows grouped, longest first, so that each group padded to its longest row computes at
    most ``waste`` times its real tokens (and at most ``max_positions`` positions)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    real = 0
    for i in order:
        if groups and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= min(waste * (real + lengths[i]), max_positions):
            groups[-1].append(i)
            real += lengths[i]
        else:
            groups.append([i])
            real = lengths[i]
    return groups


def _prefill(model, input_ids: torch.Tensor, attention: torch.Tensor, capacity: int, min_shared: int = 8):
    """Run the left-padded prompts through ``model``: (the last position's logits [rows, vocab],
    the KV cache, its attention mask). Only real tokens are computed, up to a little padding:
    the prompts' shared leading tokens (``_shared_prefix``, when at least ``min_shared``) run
    once, in one row, and each row's own tokens run in groups of rows of similar length
    (``_chunks``). The cache's columns are the shared tokens, then each row's own tokens
    right-aligned (padding between, masked): the same attention as over the padded prompt,
    with positions from each row's real tokens as before."""
    from transformers import DynamicCache

    from tokenalign.utils.models import forward_parameters

    params = forward_parameters(model)
    cache_name = _cache_kwarg(params)
    keep_last = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    layer_class = _cache_layer_class()

    def new_cache(size: int, transposed_keys: bool = False):
        cache = DynamicCache(config=model.config)
        cache.layers = [layer_class(size, transposed_keys) for _ in cache.layers]
        return cache

    n, width = input_ids.shape
    shared = _shared_prefix(input_ids, attention)
    shared = shared if shared >= min_shared else 0
    prefix_kv = None
    if shared:
        head = input_ids[:1, width - int(attention[0].sum()) :][:, :shared]
        cache = new_cache(shared)
        model(input_ids=head, attention_mask=torch.ones_like(head), position_ids=torch.arange(shared)[None].to(head.device),
              **{cache_name: cache, "use_cache": True}, **keep_last)
        prefix_kv = [(layer.keys, layer.values) for layer in cache.layers]
    own_ids, own_mask = input_ids[:, shared:], attention[:, : width - shared].long()  # right-aligned own tokens
    own = own_mask.sum(-1)
    mask = torch.cat([own_mask.new_ones((n, shared)), own_mask], dim=-1)
    positions = (shared + own_mask.cumsum(-1) - 1).clamp(min=0)
    big = new_cache(capacity, transposed_keys=True)  # the cache the decoding steps read
    logits = None
    for group in _chunks(own.tolist()):
        rows = torch.tensor(group, device=input_ids.device)
        span = int(own[group[0]])
        cache = new_cache(shared + span)
        if prefix_kv is not None:
            for layer, (k, v) in zip(cache.layers, prefix_kv):
                layer.fill(k.expand(len(group), -1, -1, -1), v.expand(len(group), -1, -1, -1))
        chunk_mask = torch.cat([own_mask.new_ones((len(group), shared)), own_mask[rows, -span:]], dim=-1)
        out = model(input_ids=own_ids[rows, -span:], attention_mask=chunk_mask, position_ids=positions[rows, -span:],
                    **{cache_name: cache, "use_cache": True}, **keep_last).logits[:, -1]
        if logits is None:
            logits = out.new_empty((n, out.shape[-1]))
        logits[rows] = out
        for target, layer in zip(big.layers, cache.layers):
            if not target.is_initialized:
                target.reserve(n, width, layer.keys, layer.values)
                if shared:
                    target.write(slice(None), shared, layer.keys[:1, :, :shared], layer.values[:1, :, :shared])
            target.write(rows, width, layer.keys[:, :, shared:], layer.values[:, :, shared:])
    return logits, big, mask


def _sample_pruned(model, input_ids: torch.Tensor, attention: torch.Tensor, processors, criteria: Sequence,
                   greedy: bool, eos_id, max_new_tokens: int,
                   logprob_temperature: float | None = None) -> tuple[list[list[int]], list[list[float]] | None]:
    """Sample one left-padded batch with the KV cache, dropping each row from the batch (and
    the cache) as soon as it finishes, so the cost follows the tokens actually generated.

    A row finishes on EOS, when a stopping criterion (called with ``(ids, scores, rows=rows)``,
    ids the running rows' prompt and generated tokens, rows their indices in the batch) says
    so, or after ``max_new_tokens``. Returns each row's generated ids, including the token
    that finished it, as ``model.generate`` would give them without its trailing padding,
    and, when ``logprob_temperature`` is given, each id's log-prob under
    ``softmax(logits / logprob_temperature)`` (None otherwise). Positions follow the
    attention mask: a row's next position is its number of real tokens so far.
    """
    from tokenalign.utils.models import forward_parameters

    n, width = input_ids.shape
    device = input_ids.device
    params = forward_parameters(model)
    out: list[list[int] | None] = [None] * n
    out_lp: list[list[float] | None] = [None] * n
    record = logprob_temperature is not None
    if max_new_tokens <= 0:
        return [[] for _ in range(n)], ([[] for _ in range(n)] if record else None)
    rows = torch.arange(n, device=device)  # the original index of each running row
    ids = input_ids
    lps = torch.zeros((n, 0), dtype=torch.float32, device=device)
    next_pos = attention.long().sum(-1, keepdim=True)  # [rows, 1]
    last, cache, mask = _prefill(model, input_ids, attention, width + max_new_tokens)
    cache_kw = {_cache_kwarg(params): cache, "use_cache": True}
    for step in range(max_new_tokens):
        last = last.to(dtype=torch.float32)
        scores = processors(ids, last)
        token = scores.argmax(-1) if greedy else _draw(scores)
        if record:
            scaled = last if logprob_temperature == 1.0 else last / logprob_temperature
            lp = torch.log_softmax(scaled, dim=-1).gather(-1, token[:, None])
            lps = torch.cat([lps, lp], dim=-1)
        ids = torch.cat([ids, token[:, None]], dim=-1)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        done = token == eos_id if eos_id is not None else torch.zeros_like(token, dtype=torch.bool)
        for criterion in criteria:
            done |= criterion(ids, scores, rows=rows).to(device)
        if step == max_new_tokens - 1:
            done[:] = True
        if bool(done.any()):
            for i, row in zip(done.nonzero().squeeze(1).tolist(), rows[done].tolist()):
                out[row] = ids[i, width:].tolist()
                if record:
                    out_lp[row] = lps[i].tolist()
            running = (~done).nonzero().squeeze(1)
            if running.numel() == 0:
                break
            rows, ids, mask, next_pos, token = rows[running], ids[running], mask[running], next_pos[running], token[running]
            lps = lps[running]
            cache.batch_select_indices(running)
            mask = _drop_padding_columns(cache, mask)
        last = model(input_ids=token[:, None], attention_mask=mask, position_ids=next_pos, **cache_kw).logits[:, -1]
        next_pos = next_pos + 1
    return out, (out_lp if record else None)  # type: ignore[return-value]


def _prompt_limit(model, max_new_tokens: int) -> int | None:
    """How many prompt tokens fit beside ``max_new_tokens`` in a decoder's context (None: no
    fixed context); a budget that leaves no room for a prompt is a one-line error."""
    from tokenalign.errors import ConfigError
    from tokenalign.utils.models import context_length

    context = context_length(model.config)
    if context is None:
        return None
    if max_new_tokens >= context:
        raise ConfigError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's context of "
                          f"{context} tokens")
    return context - max_new_tokens


def fit_prompts(prompts: Sequence[str], tokenizer, model, settings: SamplingSettings, conditioning=None) -> list[str]:
    """The prompts to sample as ``settings.long_prompts`` says: all of them (``truncate``:
    the sampler keeps the last tokens of one that does not fit beside ``max_new_tokens`` in
    the model's context), or those that fit (``skip``); either way the long ones are counted
    in a warning. Nothing left is a one-line error. ``conditioning``: count the tokens of
    the conditioned prompts the sampler will read."""
    from tokenalign.errors import TokenalignError
    from tokenalign.utils.models import is_encoder_decoder

    limit = None if is_encoder_decoder(model) else _prompt_limit(model, settings.max_new_tokens)
    if limit is None or not prompts:
        return list(prompts)
    encode = conditioning.encode_prompt if conditioning is not None else encode_prompt
    fits = [len(encode(tokenizer, p)) <= limit for p in prompts]
    n_long = fits.count(False)
    if not n_long:
        return list(prompts)
    what = (f"{n_long} of {len(prompts)} prompts are longer than the {limit} tokens that fit beside "
            f"max_new_tokens={settings.max_new_tokens} in the model's context")
    if settings.long_prompts == "truncate":
        log.warning("%s: their last %d tokens are sampled from (long_prompts: truncate)", what, limit)
        return list(prompts)
    kept = [p for p, ok in zip(prompts, fits) if ok]
    if not kept:
        raise TokenalignError(f"{what}: none is left to sample (long_prompts: skip)")
    log.warning("%s: skipped (long_prompts: skip), %d left", what, len(kept))
    return kept


@torch.no_grad()
def generate(
    model, tokenizer, prompts: Sequence[str], config: SamplingConfig | None = None, progress: bool = True, conditioning=None
) -> list[Sample]:
    """Sample one completion per prompt (repeat prompts for several samples each).

    A decoder-only model's prompt that does not fit beside ``max_new_tokens`` in its context
    keeps its last tokens (counted, with one warning), never a crash (``fit_prompts`` leaves
    such prompts out instead, with ``long_prompts: skip``). A prompt healed as
    ``cfg.token_healing`` says has ``Sample.prompt_ids`` without its last token, which the
    first generated token re-spells; ``Sample.completion`` is the text after the prompt.
    The recorded log-probs are of the model's distribution, without the healing constraint
    (as without top-k / top-p).

    ``conditioning`` (a :class:`tokenalign.objectives.conditioning.Conditioning`) samples a
    conditionally trained model from ``<|good|>``; the samples' text and ids are plain.
    An encoder-decoder ``model`` reads each prompt with its encoder (``Sample.prompt_ids``
    are the encoder's ids) and writes the completion with its decoder.
    """
    from rich.progress import Progress

    from tokenalign.rollout.batch import left_aligned
    from tokenalign.utils.models import is_encoder_decoder

    cfg = config or SamplingConfig()
    if cfg.backend == "vllm":
        from tokenalign.rollout.vllm_engine import generate_vllm

        return generate_vllm(model, tokenizer, prompts, cfg, conditioning)
    if cfg.backend != "hf":
        raise ValueError(f"sampling backend must be hf or vllm, not {cfg.backend!r}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_id = tokenizer.eos_token_id
    samples: list[Sample] = []
    can_prune = cfg.prune_finished and _can_prune(model)
    encoder_decoder = is_encoder_decoder(model)
    if encoder_decoder and _generation_extras(model):
        # model.generate applies them (beam search, too): the recorded log-probs do not.
        log.warning("the model's generation_config sets %s: sampling applies them, its recorded log-probs do not",
                    ", ".join(_generation_extras(model)))
    prompt_limit = None if encoder_decoder else _prompt_limit(model, cfg.max_new_tokens)
    if cfg.token_healing not in ("off", "whitespace", "always"):
        raise ValueError(f"token_healing must be off, whitespace or always, not {cfg.token_healing!r}")
    # An encoder-decoder's prompt is the encoder's, with no boundary to heal; a conditioned
    # prompt ends in control tokens placed where the next segment starts.
    heal = cfg.token_healing != "off" and not encoder_decoder and conditioning is None
    truncated = 0
    torch.manual_seed(cfg.seed)
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("sampling", total=len(prompts))
        for start in range(0, len(prompts), cfg.batch_size):
            batch = list(prompts[start : start + cfg.batch_size])
            # An empty prompt (unconditional generation) starts from the BOS/EOS token.
            encoded = [encode_prompt(tokenizer, p) for p in batch]
            if conditioning is not None:
                plain_prompts, encoded = encoded, [conditioning.encode_prompt(tokenizer, p) for p in batch]
            if prompt_limit is not None:
                truncated += sum(len(e) > prompt_limit for e in encoded)
                encoded = [e[-prompt_limit:] for e in encoded]
            healed = [""] * len(batch)
            if heal and cfg.max_new_tokens > 0:
                healed = _healed_texts(tokenizer, encoded, cfg.token_healing)
                if any(healed):
                    texts = _token_texts(tokenizer)
                    allowed = [torch.cat([texts.starting_with(h), torch.tensor(e[-1:])]) if h else None
                               for e, h in zip(encoded, healed)]
                    encoded = [e[:-1] if h else e for e, h in zip(encoded, healed)]
            width = max(len(e) for e in encoded)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for i, e in enumerate(encoded):
                input_ids[i, width - len(e) :] = torch.tensor(e)
                attention[i, width - len(e) :] = 1
            # The ids before the generated ones in the rows stopping criteria see: the prompt,
            # or an encoder-decoder's decoder start token (its prompt is the encoder's).
            prefix = width
            if encoder_decoder:
                input_ids, attention = left_aligned(input_ids, attention)
                prefix = 1
            greedy = cfg.greedy or cfg.temperature == 0
            max_new = cfg.max_new_tokens
            criteria: list = [StopOnStrings(tokenizer, cfg.stop, prefix, healed=healed)] if cfg.stop else []
            extra_processors: list = [_FirstTokenPrefix(allowed, width)] if any(healed) else []
            if conditioning is not None:
                # Control tokens do not count: the budget is of plain tokens (the raw limit
                # leaves room for one control token per plain token at most).
                from tokenalign.utils.models import context_length

                criteria.append(conditioning.stopping_criterion(cfg.max_new_tokens, prefix))
                context = context_length(model.config)
                raw_limit = 2 * cfg.max_new_tokens if context is None else min(2 * cfg.max_new_tokens, context - prefix)
                extra_processors.append(conditioning.logits_processor())
                max_new = max(raw_limit, 1)
            # The policy's own log-probs of what it sampled (plain sampling only: a conditioned
            # model's distribution is over other ids), recorded by the pruned loop and, for an
            # encoder-decoder, from model.generate's logits.
            lp_temperature = None if conditioning is not None else (cfg.temperature if not greedy else 1.0)
            if can_prune:
                with autocast_linear_weights(model, rows=len(batch)):  # cast once, not at every step
                    rows, row_logprobs = _sample_pruned(model, input_ids.to(device), attention.to(device),
                                                        _processors(cfg, greedy, extra_processors), criteria, greedy,
                                                        eos_id, max_new, lp_temperature)
            else:
                rows, row_logprobs = _sample_hf(model, input_ids.to(device), attention.to(device), cfg, greedy,
                                                extra_processors, criteria, eos_id, pad_id, max_new,
                                                lp_temperature if encoder_decoder else None)
            for i, prompt in enumerate(batch):
                raw = rows[i]
                if conditioning is None:
                    samples.append(finish_row(tokenizer, prompt, encoded[i], raw, cfg.stop, eos_id, pad_id,
                                               row_logprobs[i] if row_logprobs is not None else None, healed[i]))
                    continue
                plain = conditioning.strip(raw)[: cfg.max_new_tokens]  # padding after a budget stop is cut
                sample = finish_row(tokenizer, prompt, plain_prompts[i], plain, cfg.stop, eos_id, pad_id)
                sample.conditioned_ids = (encoded[i], conditioning.raw_prefix(raw, len(sample.generated_ids)))
                samples.append(sample)
            bar.update(task, advance=len(batch))
    if truncated:
        log.warning("%d of %d prompts do not fit beside max_new_tokens=%d in the model's context: their last %d "
                    "tokens were kept (Sample.prompt_ids)", truncated, len(prompts), cfg.max_new_tokens, prompt_limit)
    model.train(was_training)
    return samples
