"""The shipped accelerate configs for sharded training (``examples/accelerate``) build the
plugin accelerate would build from them (FSDP here; DeepSpeed where it is installed), and
checkpoints refuse DeepSpeed's partitioned optimizer with one line. FSDP and ZeRO run on
GPUs only: no launch here (docs/scaling.md)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "accelerate"


def _launch_env(config: Path) -> dict[str, str]:
    """The environment ``accelerate launch --config_file CONFIG`` gives its processes (the
    ``ACCELERATE_*``, ``FSDP_*`` settings the plugins read), through accelerate's own code."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(config), "-m", "tokenalign", "train"])
    args, _, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    return {k: v for k, v in env.items() if k.startswith(("ACCELERATE", "FSDP"))}


def test_fsdp_config_builds_the_fsdp_plugin():
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import StateDictType

    env = _launch_env(EXAMPLES / "fsdp.yaml")
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    with mock.patch.dict(os.environ, env):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.state_dict_type == StateDictType.FULL_STATE_DICT
    assert plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"


def test_deepspeed_zero2_config_builds_the_deepspeed_plugin():
    pytest.importorskip("deepspeed")
    from accelerate.utils import DeepSpeedPlugin

    env = _launch_env(EXAMPLES / "deepspeed_zero2.yaml")
    with mock.patch.dict(os.environ, env):
        plugin = DeepSpeedPlugin()
    assert plugin.zero_stage == 2


def test_checkpoints_refuse_deepspeed_with_one_line(tmp_path):
    from accelerate.utils import DistributedType

    from tokenalign.errors import TokenalignError
    from tokenalign.utils.checkpoint import save_distributed_checkpoint

    acc = SimpleNamespace(distributed_type=DistributedType.DEEPSPEED)
    with pytest.raises(TokenalignError, match="DeepSpeed ZeRO are not supported"):
        save_distributed_checkpoint(acc, tmp_path / "checkpoint", {}, None, None, {})
    assert not (tmp_path / "checkpoint").exists()
