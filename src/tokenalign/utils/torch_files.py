"""Read ``.pt`` files without running their pickles: ``torch.load(weights_only=True)``,
with a refused or unreadable file as one :class:`~tokenalign.errors.TokenalignError`
that names the file and why, not a page of traceback."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

from tokenalign.errors import TokenalignError

__all__ = ["load_weights_only"]

_BOILERPLATE = ("weights only load failed", "please file an issue", "check the documentation", "in pytorch 2.6")


def _reason(err: Exception) -> str:
    """The line of torch's message that says what was refused (it wraps it in advice)."""
    lines = [x.strip() for x in str(err).splitlines() if x.strip()]
    useful = [x for x in lines if not x.lower().startswith(_BOILERPLATE)]
    reason = (useful or lines or [type(err).__name__])[0].removeprefix("WeightsUnpickler error:").strip()
    return reason.split(". ")[0].rstrip(".") or type(err).__name__


def load_weights_only(path: str | Path) -> Any:
    """The tensors and plain data saved in ``path``, loaded on the CPU.

    Raises :class:`TokenalignError` when torch refuses the file (it holds other Python
    objects, e.g. a pickle that would run code) or cannot read it (corrupt, truncated).
    """
    import torch

    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        raise TokenalignError(f"{path}: refused to load: it holds more than tensors and plain data "
                              f"({_reason(err)}); only load files you trust") from None
    except OSError as err:
        raise TokenalignError(f"{path}: cannot read: {err.strerror or err}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as err:
        raise TokenalignError(f"{path}: cannot read as a torch file (corrupt or truncated?): {_reason(err)}") from None
