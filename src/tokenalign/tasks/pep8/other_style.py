"""The pep8 task's ``other-style`` prompt set: function headers written in other styles than
the standard library's, from permissively licensed third-party packages.

The model was pretrained on the standard library, whose headers rarely carry type hints
and whose docstrings are mostly short prose. This set asks whether an alignment result
holds on headers it has not seen the like of: type hints, Google/NumPy/Sphinx docstrings,
other projects' conventions.

The rule (deterministic, no hand-picking):

1. the packages of :data:`PACKAGES`, each with an MIT, BSD or Apache-2.0 licence in its
   installed metadata (checked; a package without one is left out);
2. their ``.py`` files, except tests and vendored code (:func:`_sources`);
3. the headers :func:`~tokenalign.tasks.pep8.prompts.extract_headers` takes from them
   (same format and 400-character cap as the stdlib prompts), repeats dropped;
4. a header qualifies when it takes a body (``header + "\\n    pass"`` parses), fits the base
   model's room for a prompt (:data:`MAX_PROMPT_TOKENS` tokens: its context of 256 less 128
   new tokens, so no prompt is cut) and is not among the stdlib prompts; it is a *long-docstring* header when its docstring has at
   least :data:`MIN_DOC_LINES` lines, else a *type-hinted* one when it has a type hint (an
   annotated argument or return), else neither;
5. ordered by ``sha256(package + NUL + header)``, each package gives its first
   ``PER_PACKAGE // 2`` long-docstring headers, then type-hinted ones, then more
   long-docstring ones, up to :data:`PER_PACKAGE` in all; the whole set is ordered by that hash.

The shipped ``assets/prompts_other_style.jsonl`` carries each prompt's package, version,
licence and file; ``assets/prompts_other_style_NOTICE.txt`` the attribution per package.
``python -m tokenalign.tasks.pep8.other_style`` rebuilds both from the packages installed
(the same versions give the same file) and prints the set's statistics beside the stdlib
test prompts'.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import statistics
from importlib import metadata
from pathlib import Path

from tokenalign.tasks.pep8 import ASSETS
from tokenalign.tasks.pep8.prompts import PROMPT_FILES, extract_headers, load_prompts

__all__ = ["PACKAGES", "build_other_style", "header_stats", "licence", "set_stats", "write_other_style"]

# distribution names, chosen for their range of styles: type-hinted code (rich, click,
# attrs, pydantic, typer, anyio, huggingface_hub), Google-style docstrings (transformers,
# accelerate, datasets, peft, trl), NumPy-style (networkx, pandas, scikit-learn), Sphinx
# fields (requests, jinja2, pygments, urllib3), and packaging, markdown-it-py, fsspec
PACKAGES: tuple[str, ...] = (
    "accelerate", "anyio", "attrs", "click", "datasets", "fsspec", "huggingface_hub", "jinja2", "markdown-it-py",
    "networkx", "packaging", "pandas", "peft", "pydantic", "pygments", "requests", "rich", "scikit-learn",
    "transformers", "trl", "typer", "urllib3",
)
PER_PACKAGE = 8
MIN_DOC_LINES = 5
MAX_PROMPT_TOKENS = 128
NOTICE = "prompts_other_style_NOTICE.txt"
_PERMISSIVE = re.compile(r"\b(MIT|BSD|Apache)\b", re.I)
_COPYRIGHT = re.compile(r"copyright\s*(\(c\)|©|\d)", re.I)
_OTHER = re.compile(r"\b(GPL|LGPL|AGPL|MPL|Mozilla|PSF|Python Software Foundation)\b", re.I)


def licence(dist: metadata.Distribution) -> str:
    """The distribution's licence when it is MIT, BSD or Apache (its License-Expression, else
    its License field's first line, else its classifiers); "" otherwise."""
    meta = dist.metadata
    licence_lines = (meta.get("License") or "").strip().splitlines()
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    for text in (meta.get("License-Expression") or "", licence_lines[0] if licence_lines else "", " ".join(classifiers)):
        if text.strip():  # the first field that says anything decides
            return text.strip() if _PERMISSIVE.search(text) and not _OTHER.search(text) else ""
    return ""


def _sources(dist: metadata.Distribution) -> list[str]:
    """The distribution's own ``.py`` files, sorted: without tests (their own style: no
    docstrings, fixtures) and vendored code (other authors and licences: a vendor folder, or
    any folder that ships its own licence file, such as typer's copy of click)."""
    files = [str(f) for f in dist.files or []]
    licensed = {f.rpartition("/")[0] + "/" for f in files if ".dist-info/" not in f
                and f.rpartition("/")[2].upper().startswith(("LICENSE", "LICENCE", "COPYING"))}
    out = []
    for path in files:
        parts = path.lower().split("/")
        name = parts[-1]
        if (not name.endswith(".py") or any(path.startswith(folder) for folder in licensed)
                or any(p in ("tests", "test", "testing", "_vendor", "vendor", "vendored", "externals", "third_party")
                       for p in parts[:-1])
                or name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py"):
            continue
        out.append(path)
    return sorted(out)


def header_stats(header: str) -> tuple[bool, int] | None:
    """Whether a header has a type hint, and its docstring's line count (0: none); None when
    the header does not take a body (the extractor cuts a def whose body shares its last line)."""
    try:
        fn = ast.parse(header + "\n    pass\n").body[0]
    except SyntaxError:
        return None
    a = fn.args
    hinted = fn.returns is not None or any(arg.annotation is not None for arg in
                                           [*a.posonlyargs, *a.args, *a.kwonlyargs, *(v for v in (a.vararg, a.kwarg) if v)])
    doc = ast.get_docstring(fn, clean=False)
    return hinted, len(doc.strip("\n").splitlines()) if doc is not None else 0


def _licence_file(dist: metadata.Distribution) -> tuple[str, str]:
    """The distribution's licence file (in its metadata folder) and its first copyright line ("" if none)."""
    for f in sorted(str(f) for f in dist.files or []):
        if ".dist-info/" in f and f.rpartition("/")[2].upper().startswith(("LICENSE", "LICENCE", "COPYING")):
            text = Path(dist.locate_file(f)).read_text(encoding="utf-8", errors="replace")
            owner = next((line.strip() for line in text.splitlines() if _COPYRIGHT.match(line.strip())), "")
            return f, owner
    return "", ""


def _key(package: str, header: str) -> str:
    return hashlib.sha256(f"{package}\0{header}".encode()).hexdigest()


def build_other_style(packages: tuple[str, ...] = PACKAGES, per_package: int = PER_PACKAGE,
                      min_doc_lines: int = MIN_DOC_LINES) -> list[dict]:
    """The set's records (prompt, package, version, licence, file), by the module's rule."""
    from tokenalign.tasks.pep8 import load_tokenizer

    stdlib = set(load_prompts("train")) | set(load_prompts("test"))
    tokenizer = load_tokenizer()
    records = []
    for name in packages:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        lic = licence(dist)
        if not lic:
            continue
        found: dict[str, str] = {}  # header -> its first file
        for file in _sources(dist):
            try:
                source = Path(dist.locate_file(file)).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            for header in extract_headers(source):
                found.setdefault(header, file)
        long_doc, hinted = [], []
        for header, file in found.items():
            stats = header_stats(header)
            if stats is None or header in stdlib or len(tokenizer(header)["input_ids"]) > MAX_PROMPT_TOKENS:
                continue
            item = (_key(name, header), header, file)
            if stats[1] >= min_doc_lines:
                long_doc.append(item)
            elif stats[0]:
                hinted.append(item)
        long_doc.sort()
        chosen = long_doc[: per_package // 2]
        chosen += sorted(hinted)[: per_package - len(chosen)]
        chosen += long_doc[per_package // 2 :][: per_package - len(chosen)]  # a package with few type hints
        for key, header, file in chosen:
            records.append({"prompt": header, "package": dist.metadata["Name"], "version": dist.version,
                            "licence": lic, "file": file, "_key": key})
    records.sort(key=lambda r: r["_key"])
    for r in records:
        del r["_key"]
    return records


def set_stats(prompts: list[str]) -> dict[str, float]:
    """Share of headers with type hints, with a docstring, and docstring lines (mean over those with one)."""
    stats = [s for s in map(header_stats, prompts) if s]
    docs = [n for _, n in stats if n]
    return {"prompts": len(prompts), "type_hint_share": sum(h for h, _ in stats) / len(stats),
            "docstring_share": len(docs) / len(stats), "mean_docstring_lines": statistics.mean(docs) if docs else 0.0,
            "mean_chars": statistics.mean(len(p) for p in prompts)}


def write_other_style(folder: Path = ASSETS) -> dict[str, dict[str, float]]:
    """Rebuild the shipped set and its NOTICE; returns its statistics beside the stdlib test prompts'."""
    records = build_other_style()
    (folder / PROMPT_FILES["other-style"]).write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    by_package: dict[tuple, list[str]] = {}
    for r in records:
        by_package.setdefault((r["package"], r["version"], r["licence"]), []).append(r["file"])
    lines = ["The pep8 task's other-style prompts (prompts_other_style.jsonl) are function headers (a def",
             "line and its docstring, unchanged apart from dedenting) copied from the following packages,",
             "under their licences, whose full texts ship in each package's distribution (the file named).",
             "Each record of the JSONL names its package, version, licence and file.",
             "Rule and builder: tokenalign/tasks/pep8/other_style.py.", ""]
    for (package, version, lic), files in sorted(by_package.items(), key=lambda kv: kv[0][0].lower()):
        licence_file, owner = _licence_file(metadata.distribution(package))
        lines += [f"{package} {version}: {lic}; {licence_file}" + (f"; {owner}" if owner else ""),
                  f"  {len(files)} headers from {', '.join(sorted(set(files)))}"]
    (folder / NOTICE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"other-style": set_stats([r["prompt"] for r in records]), "test (stdlib)": set_stats(load_prompts("test"))}


if __name__ == "__main__":
    print(json.dumps(write_other_style(), indent=1))
