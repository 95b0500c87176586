"""DPO, RTO and sequence-level PPO from the same preference pairs on the pep8 task.

The pairs: every strictly ordered pair of the base model's 4 samples per training prompt,
ranked by pycodestyle (``pep8_preferences``). From them, per seed:

- ``dpo``: DPO on the pairs, offline (Rafailov et al. 2023; β 0.1);
- ``rto``: PPO on the DPO model's dense token reward r_t = β log π_dpo(y_t)/π_ref(y_t)
  (RTO, Zhong et al. 2024; β 0.05, no clip), no sparse term: RTO's sentence-level reward
  would be pycodestyle's own score, which the other arms never see;
- ``ppo-seq``: PPO on a sequence reward model learned from the same pairs (Bradley-Terry,
  aggregator ``last``: the end token's score alone, placed on the last token).

``rto`` against ``ppo-seq`` is token-level against sequence-level credit at equal
information; both use the same PPO settings, KL coefficient and sample budget. Every arm is
judged on held-out test prompts by pycodestyle (never a training signal here).

    python benchmarks/dpo_rto_pep8.py --out runs/dpo-rto --seeds 0 1 2

Resumable: each finished step is skipped. Writes OUT/results.md and results.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from pep8_preferences import finished, pairs_from_ranked, ranked_base_samples, sets, tokenalign, write_table  # noqa: E402

log = logging.getLogger("dpo_rto_pep8")

ARMS = ("dpo", "rto", "ppo-seq")



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/dpo-rto")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--ranked-prompts", type=int, default=128)
    parser.add_argument("--dpo-iterations", type=int, default=60, help="x 8 pairs")
    parser.add_argument("--rl-iterations", type=int, default=16, help="x 8 prompts x 4 samples")
    parser.add_argument("--kl-coef", type=float, default=0.2, help="RTO's β2, both PPO arms")
    parser.add_argument("--eval-prompts", type=int, default=48)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for a quick check")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.smoke:
        args.ranked_prompts, args.dpo_iterations, args.rl_iterations, args.eval_prompts = 4, 2, 2, 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    ranked = ranked_base_samples(out / "ranked", args.ranked_prompts, args.smoke)
    pairs = out / "pairs.jsonl"
    if not pairs.is_file():
        log.info("%d pairs -> %s", pairs_from_ranked(ranked, pairs), pairs)
    seq_rm = out / "sequence-rm"
    if not (seq_rm / "model").is_dir():
        tokenalign("reward", *sets(out_dir=seq_rm, data__train=pairs, data__format="pairs", learn__aggregator="last",
                                   learn__epochs=2, learn__lr=1e-4, head__end_token="true",
                                   head__hidden_size=64 if args.smoke else 2048))
    evaluation = dict(eval__prompts=args.eval_prompts, eval__samples_per_prompt=4, mixed_precision="no")
    rl = dict(objective="ppo", iterations=args.rl_iterations, prompts_per_iteration=8, samples_per_prompt=4, lr=5e-5,
              kl_coef=args.kl_coef, eval__every=args.rl_iterations, **evaluation)
    results: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    before: list[dict] = []
    for seed in args.seeds:
        folders = {arm: out / f"{arm}-{seed}" for arm in ARMS}
        if not finished(folders["dpo"]):
            tokenalign("train", *sets(out_dir=folders["dpo"], seed=seed, objective="dpo", dpo__data=pairs, dpo__beta=0.1,
                                      iterations=args.dpo_iterations, prompts_per_iteration=8, lr=5e-5,
                                      eval__every=args.dpo_iterations, **evaluation))
        if not finished(folders["rto"]):
            tokenalign("train", *sets(out_dir=folders["rto"], seed=seed, reward__source="dpo",
                                      reward__model=folders["dpo"] / "model", reward__beta=0.05, reward__placement="token",
                                      **rl))
        if not finished(folders["ppo-seq"]):
            tokenalign("train", *sets(out_dir=folders["ppo-seq"], seed=seed, reward__source="token_model",
                                      reward__token_model=seq_rm / "model", reward__placement="sequence",
                                      reward__aggregate="last", **rl))
        for arm, folder in folders.items():
            summary = json.loads((folder / "summary.json").read_text())
            results[arm].append(summary["after"])
            before.append(summary["before"])
    setup = (f"seeds {args.seeds}; {len(pairs.read_text().splitlines())} pairs from {args.ranked_prompts} training prompts "
             f"x 4 ranked base samples; DPO {args.dpo_iterations} steps x 8 pairs; PPO {args.rl_iterations} iterations x 8 "
             f"prompts x 4 samples, KL coefficient {args.kl_coef}; held-out test prompts: {args.eval_prompts} x 4 samples "
             "(T 0.7, top-p 0.9); mean ± 95% t-interval half-width")
    table = write_table(out, setup, {"dpo": "DPO", "rto": "RTO (PPO, DPO token reward)",
                                     "ppo-seq": "PPO, sequence RM from the same pairs"}, before, results, vars(args))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
