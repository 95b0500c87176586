"""Pretrain the pep8 task's base LM from scratch on the stdlib corpus (``tokenalign pretrain``).

nanoGPT-style: documents joined by ``<|endoftext|>`` and cut into fixed-length blocks, a
GPT-2 built from a config, AdamW with warmup + cosine decay, bf16 autocast where the
hardware has it (via accelerate), periodic validation loss, metrics.jsonl, atomic
checkpoints with exact resume (the run holds its folder's lock and resumes only with the
config it started with; :data:`MAY_CHANGE` may differ). The result (model + tokenizer + training.json) is what
ships in ``tokenalign/tasks/pep8/assets/model``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import platform
import time
from pathlib import Path
from typing import Literal

import torch

from tokenalign.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["PretrainConfig", "pretrain", "MAY_CHANGE"]

# Keys a resumed run may change: the number of steps (the schedule then follows the new total), when it stops.
MAY_CHANGE = ("steps", "stop_after_steps")


@dataclasses.dataclass
class PretrainConfig:
    """Model size, data and optimisation of the base-model pretraining."""

    out_dir: str = "runs/pretrain"
    vocab_size: int = 4096
    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    block_size: int = 256
    dropout: float = 0.0
    batch_size: int = 32
    steps: int = 1600
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 200
    eval_blocks: int = 256
    save_every: int = 200
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    threads: int = 2  # 0: torch's default
    seed: int = 0
    max_train_files: int = 0  # 0: all (tests use a few)
    method_documents: bool = False  # also train on every method dedented to column 0 (the prompts' shape)
    init_from: str = ""  # a model folder to continue from (its weights and tokenizer); "" = from scratch
    stop_after_steps: int = 0  # stop this invocation after N steps (checkpointed; rerun to continue)

    def validate(self) -> None:
        if self.n_embd % self.n_head:
            raise ConfigError("n_embd must be divisible by n_head")
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError("steps and batch_size must be >= 1")


def _blocks(tokenizer, docs: list[str], block_size: int) -> torch.Tensor:
    """All documents, joined by EOS, cut into ``[N, block_size]`` (the tail is dropped)."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for enc in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        ids.append(eos)
    n = len(ids) // block_size
    return torch.tensor(ids[: n * block_size], dtype=torch.long).view(n, block_size)


def _lr_at(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def _eval_loss(model, blocks: torch.Tensor, batch_size: int, accelerator) -> float:
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(blocks), batch_size):
        x = blocks[i : i + batch_size].to(accelerator.device)
        with accelerator.autocast():
            loss = model(input_ids=x, labels=x).loss
        total += loss.item() * len(x)
        n += len(x)
    model.train()
    return total / max(n, 1)


def machine_description() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def reproduce_command(cfg: PretrainConfig) -> str:
    """The ``tokenalign pretrain`` command line that reproduces ``cfg``."""
    default = PretrainConfig()
    sets = [f"--set {f.name}={getattr(cfg, f.name)}" for f in dataclasses.fields(cfg)
            if getattr(cfg, f.name) != getattr(default, f.name)]
    return " ".join(["tokenalign pretrain", *sets])


def pretrain(cfg: PretrainConfig, allow_config_change: bool = False) -> Path:
    """Train the base model; returns the folder of the final model (``out_dir/model``), or
    the checkpoint folder when ``stop_after_steps`` ended this invocation early.
    ``allow_config_change``: resume a run whose saved config differs in keys other than
    :data:`MAY_CHANGE`."""
    from tokenalign.config import config_to_yaml
    from tokenalign.errors import ConfigError
    from tokenalign.utils.accel import launched_processes
    from tokenalign.utils.runfolder import open_run_folder

    if launched_processes() > 1:  # every process would train on the same batches and write the same files
        raise ConfigError("pretrain runs in one process (its batches are not shared between processes); "
                          "start it without torchrun / accelerate launch")

    with open_run_folder(cfg.out_dir, config_to_yaml(cfg), may_change=MAY_CHANGE, allow_config_change=allow_config_change):
        return _pretrain(cfg)


def _pretrain(cfg: PretrainConfig) -> Path:
    from rich.progress import Progress
    from transformers import GPT2Config, GPT2LMHeadModel

    from tokenalign.utils.accel import make_accelerator
    from tokenalign.tasks.pep8.corpus import dedented_methods, read_corpus
    from tokenalign.tasks.pep8.tokenizer import train_tokenizer
    from tokenalign.utils.checkpoint import load_checkpoint, save_checkpoint
    from tokenalign.utils.io import atomic_path, atomic_write_json
    from tokenalign.utils.metrics import MetricsWriter

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    torch.manual_seed(cfg.seed)
    t_start = time.perf_counter()

    train_docs = [t for _, t in read_corpus("train")]
    if cfg.max_train_files:
        train_docs = train_docs[: cfg.max_train_files]
    tok_dir = out / "tokenizer"
    if cfg.init_from or (tok_dir / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(cfg.init_from or tok_dir)
    else:
        tokenizer = train_tokenizer(train_docs, cfg.vocab_size)
        with atomic_path(tok_dir) as tmp:
            tokenizer.save_pretrained(tmp)
    # The tokenizer sees the files only; the model also sees their methods as documents.
    if cfg.method_documents:
        train_docs = train_docs + [m for doc in train_docs for m in dedented_methods(doc)]
    train_blocks = _blocks(tokenizer, train_docs, cfg.block_size)
    val_blocks = _blocks(tokenizer, [t for _, t in read_corpus("validation")], cfg.block_size)[: cfg.eval_blocks]
    test_blocks = _blocks(tokenizer, [t for _, t in read_corpus("test")], cfg.block_size)[: cfg.eval_blocks]
    log.info("train %d blocks of %d tokens; validation %d; test %d", len(train_blocks), cfg.block_size, len(val_blocks), len(test_blocks))

    model_cfg = GPT2Config(
        vocab_size=len(tokenizer), n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    ckpt = out / "checkpoint"
    resume = (ckpt / "state.json").is_file()
    if resume:
        model = GPT2LMHeadModel.from_pretrained(ckpt / "model")
    elif cfg.init_from:
        model = GPT2LMHeadModel.from_pretrained(cfg.init_from)
        if model.config.n_positions < cfg.block_size:
            raise ConfigError(f"block_size {cfg.block_size} exceeds the context of {cfg.init_from}")
    else:
        model = GPT2LMHeadModel(model_cfg)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.95),
    )
    step, seconds_before = 0, 0.0
    if resume:
        state = load_checkpoint(ckpt, optimizer, None)
        step, seconds_before = state["step"], state.get("train_seconds", 0.0)
        log.info("resumed pretraining at step %d", step)
    metrics = MetricsWriter(out / "metrics.jsonl")
    metrics.trim(step, key="step")  # rows after the checkpoint (all of them without one), written before a kill, are redone
    accelerator = make_accelerator(cfg.mixed_precision)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    steps_per_epoch = max(1, len(train_blocks) // cfg.batch_size)

    def batch_for(s: int) -> torch.Tensor:
        """The batch of step ``s``: a function of (seed, step) only, for exact resume."""
        epoch, pos = divmod(s, steps_per_epoch)
        perm = torch.randperm(len(train_blocks), generator=torch.Generator().manual_seed(cfg.seed * 1009 + epoch))
        return train_blocks[perm[pos * cfg.batch_size : (pos + 1) * cfg.batch_size]]

    t0 = time.perf_counter()
    first_step = step

    def save_ckpt() -> None:
        unwrapped = accelerator.unwrap_model(model)
        save_checkpoint(ckpt, {"model": lambda d: unwrapped.save_pretrained(d, safe_serialization=True)}, optimizer, None,
                        {"step": step, "train_seconds": seconds_before + time.perf_counter() - t0})

    with Progress(transient=True) as progress:
        task = progress.add_task("pretraining", total=cfg.steps, completed=step)
        while step < cfg.steps:
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, cfg)
            x = batch_for(step).to(accelerator.device)
            with accelerator.autocast():
                loss = model(input_ids=x, labels=x).loss
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            progress.update(task, advance=1, description=f"pretraining  loss {loss.item():.3f}")
            row = {"step": step, "loss": loss.item(), "lr": _lr_at(step - 1, cfg),
                   "seconds": round(seconds_before + time.perf_counter() - t0, 2)}
            if step % cfg.eval_every == 0 or step == cfg.steps:
                row["val_loss"] = _eval_loss(model, val_blocks, cfg.batch_size, accelerator)
                log.info("step %d: train %.3f, validation %.3f", step, row["loss"], row["val_loss"])
            metrics.append(row)
            if step % cfg.save_every == 0 and step < cfg.steps:
                save_ckpt()
            if cfg.stop_after_steps and step - first_step >= cfg.stop_after_steps and step < cfg.steps:
                save_ckpt()
                log.info("stopping after %d steps as asked; rerun the same command to continue", cfg.stop_after_steps)
                return ckpt
    train_seconds = seconds_before + time.perf_counter() - t0
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.eval()
    final = out / "model"
    with atomic_path(final) as tmp:
        unwrapped.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        info = {
            "command": reproduce_command(cfg),
            "config": dataclasses.asdict(cfg),
            "parameters": sum(p.numel() for p in unwrapped.parameters()),
            "tokens_seen": step * cfg.batch_size * cfg.block_size,
            "train_seconds": round(train_seconds, 1),
            "total_seconds": round(time.perf_counter() - t_start + seconds_before, 1),
            "validation_loss": _eval_loss(unwrapped, val_blocks, cfg.batch_size, accelerator),
            "test_loss": _eval_loss(unwrapped, test_blocks, cfg.batch_size, accelerator),
            "mixed_precision": accelerator.mixed_precision,
            "machine": machine_description(),
        }
        previous = Path(cfg.init_from) / "training.json" if cfg.init_from else None
        if previous is not None and previous.is_file():
            # A continued run: keep the earlier stage's record and the totals over both.
            before = json.loads(previous.read_text(encoding="utf-8"))
            info["continued_from"] = before
            info["tokens_seen_total"] = info["tokens_seen"] + before.get("tokens_seen_total", before.get("tokens_seen", 0))
            info["train_seconds_total"] = round(info["train_seconds"] + before.get("train_seconds_total", before.get("train_seconds", 0.0)), 1)
        atomic_write_json(tmp / "training.json", info)
    log.info("pretraining done: %s", json.dumps({k: v for k, v in info.items() if k != "config"}))
    return final
