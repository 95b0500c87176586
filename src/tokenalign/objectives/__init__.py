"""Training objectives as plug-ins: one module per family, registered by name.

``ppo``, ``reinforce``, ``rloo``, ``wmle``, ``dpo``, the distribution-matching family (``dpg``,
``fdpg``, ``cdpg``) and the PHF family (``phf-*``). A config's ``objective`` takes a
registered name or ``package.module:Class`` (a subclass of :class:`Objective`).
"""

from tokenalign.objectives.base import OBJECTIVES, Chunk, Objective, objective_class, register_objective, token_kl
from tokenalign.objectives import dm, dpo, phf, ppo, reinforce, rloo, wmle  # noqa: E402,F401  (registers the built-ins)

__all__ = ["OBJECTIVES", "Chunk", "Objective", "objective_class", "register_objective", "token_kl"]
