#!/usr/bin/env bash
# verl PPO on a Hugging Face model with tokenalign's dense token rewards (pycodestyle's
# blame, each violation on the token it points at) and token REINFORCE advantages.
#
# NOT RUN HERE: this needs GPUs and verl's full stack (vLLM or SGLang for rollouts, FSDP);
# tokenalign's CI has no GPU and checks the pieces on CPU (tests/test_verl_integration.py).
# Written against verl 0.9.1; check the keys against your verl's trainer/config/ppo_trainer.yaml.
#
# What runs where (verl's single-controller layout, all on one Ray cluster):
#   - driver (verl's TaskRunner, CPU): imports tokenalign.integrations.verl through the
#     reward-manager module path below, which registers `tokenalign_reinforce`; computes
#     the advantages from token_level_rewards (tokenalign's reward_to_go + whiten).
#   - rollout workers (GPU, vLLM): sample responses.
#   - agent-loop manager (driver) = tokenalign.integrations.verl.TokenalignAgentLoopManager:
#     after each rollout batch it puts the dense token rewards into rm_scores, which
#     verl's trainer turns into token_level_scores (verl's own streaming reward loop
#     carries one number per trajectory).
#   - reward-loop workers (CPU, Ray actors): TokenalignRewardManager.run_single, each
#     trajectory's total (logged; the dense version above replaces it).
#   - actor / reference workers (GPU, FSDP): log-probs and the policy update.
#
# Setup on the GPU machine: install verl as its docs say (e.g. pip install "verl[vllm]"),
# then pip install "tokenalign[pep8]" without changing verl's torch. Data: a parquet of
# prompts in verl's format (column `prompt` as chat messages, plus `data_source`); e.g. the
# pep8 task's prompts written with datasets' to_parquet.
set -euo pipefail

MODEL=${MODEL:-Qwen/Qwen2.5-0.5B-Instruct}   # any Hugging Face causal LM
DATA=${DATA:-$HOME/data/pep8}                # train.parquet / test.parquet

python3 -m verl.trainer.main_ppo \
    data.train_files="$DATA/train.parquet" \
    data.val_files="$DATA/test.parquet" \
    data.train_batch_size=64 \
    data.max_prompt_length=256 \
    data.max_response_length=256 \
    actor_rollout_ref.model.path="$MODEL" \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.ppo_mini_batch_size=32 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8 \
    actor_rollout_ref.actor.use_kl_loss=False \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.n=4 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8 \
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8 \
    +actor_rollout_ref.rollout.agent.agent_loop_manager_class=tokenalign.integrations.verl.TokenalignAgentLoopManager \
    reward.reward_manager.source=importlib \
    reward.reward_manager.module.path=pkg://tokenalign.integrations.verl \
    reward.reward_manager.name=TokenalignRewardManager \
    +reward.reward_kwargs.source=blame \
    +reward.reward_kwargs.task=pep8 \
    +reward.reward_kwargs.scale=1.0 \
    algorithm.adv_estimator=tokenalign_reinforce \
    +algorithm.tokenalign_baseline=whiten \
    algorithm.gamma=1.0 \
    algorithm.use_kl_in_reward=True \
    algorithm.kl_ctrl.kl_coef=0.05 \
    critic.enable=False \
    trainer.n_gpus_per_node=1 \
    trainer.nnodes=1 \
    trainer.total_epochs=1 \
    trainer.logger='["console"]' \
    trainer.project_name=tokenalign \
    trainer.experiment_name=pep8-blame-token-reinforce "$@"

# A trained token reward model (`tokenalign reward`) or a PG loop's learned guidance instead
# of the blame: +reward.reward_kwargs.source=token_model +reward.reward_kwargs.model=/path/to/rm
# (+reward.reward_kwargs.normalize=sequence). Fine-grained PPO with a critic: verl's own
# algorithm.adv_estimator=gae on these dense rewards (tokenalign_gae needs values, which
# verl's compute_advantage hands only to its built-in gae).
