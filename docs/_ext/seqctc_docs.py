"""Sphinx helpers for the seqctc docs.

Two jobs, both done before Sphinx reads any page:

* The API pages ``api/seqctc.rst``, ``api/nn.rst`` and ``api/torch_compat.rst``
  are written from the package itself, so they list exactly what it exports. The
  top-level page follows ``seqctc/__init__.py``: each comment line there starts a
  section and each ``from seqctc._module import name`` line adds ``name`` to it; any
  other public attribute lands in a last section. ``seqctc.nn`` and
  ``seqctc.torch_compat`` list their ``__all__`` or, without one, the public
  functions and classes they define, in source order.
* Pages may hold optional blocks for files that other scripts write
  (``docs/_results/*.md``, ``docs/_static/digits_*.png``)::

      ```{optional-include} ../_results/bench_ctc.md
      :heading-offset: 1
      Text shown while the file does not exist yet.
      ```

      ```{optional-figures} ../_static/digits_*.png
      Text shown while no file matches.
      ```

  ``optional-include`` becomes MyST's ``{include}`` when the file exists;
  ``optional-figures`` becomes one ``{figure}`` per matching file, captioned by
  its ``:caption STEM: text`` line (and in that order) or else by its name.
  Otherwise both become a note with the given text (nothing, if the block
  has no text), so the build passes (with ``-W``) before and after the files
  appear. Figures may live in
  ``docs/_static/`` or ``docs/_results/`` (Sphinx copies every image a page
  shows into ``_images/``, excluded folders included); a benchmark script that
  writes ``docs/_results/bench_ctc_ratio_vs_T.png`` is shown by::

      ```{optional-figures} _results/bench_ctc_*.png
      :caption bench_ctc_ratio_vs_T: Speed-up over optax against T.
      The CTC figures appear here once bench_ctc.py has written them.
      ```

* After the build, every HTML page is checked to load its scripts, styles
  and images from the built site only (no CDN), and MathJax from the copy
  that ``sphinx-mathjax-offline`` bundles: the docs read offline, formulas
  included. A page that breaks this fails the build.
"""

from __future__ import annotations

import glob
import importlib
import inspect
import os
import re
import types

SUBMODULES = ("nn", "torch_compat")
_IMPORT = re.compile(r"^from\s+seqctc\.(\w+)\s+import\s+(.+?)\s*$")
_OPTIONAL = re.compile(
    r"^```\{optional-(include|figures)\}[ \t]+(\S+)[ \t]*\n(.*?)^```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)


# --------------------------------------------------------------------------- API


def _sections_of_init(package: types.ModuleType) -> list[tuple[str, list[str]]]:
    """``[(section title, [names])]`` in the order of ``seqctc/__init__.py``."""
    with open(package.__file__, encoding="utf-8") as f:
        lines = f.read().splitlines()
    sections: list[tuple[str, list[str]]] = []
    title = "Utilities"
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            text = stripped.lstrip("#").strip()
            text = re.sub(r"\s*\([^)]*\)\s*", " ", text).strip().rstrip(".").strip()
            if text:
                title = text[0].upper() + text[1:]
            continue
        match = _IMPORT.match(stripped)
        if not match:
            continue
        names = []
        for part in match.group(2).strip("()").split(","):
            part = part.strip()
            if part:
                names.append(part.split(" as ")[-1].strip())
        if sections and sections[-1][0] == title:
            sections[-1][1].extend(names)
        else:
            sections.append((title, names))
    return sections


def _is_documentable(obj: object) -> bool:
    return not isinstance(obj, types.ModuleType) and (
        inspect.isclass(obj) or callable(obj)
    )


def _package_sections(package: types.ModuleType) -> list[tuple[str, list[str]]]:
    seen: set[str] = set()
    sections = []
    for title, names in _sections_of_init(package):
        names = [n for n in names if not n.startswith("_") and hasattr(package, n)]
        names = [n for n in names if n not in seen]
        seen.update(names)
        if names:
            sections.append((title, names))
    public = getattr(package, "__all__", None) or [
        n for n in vars(package) if not n.startswith("_")
    ]
    rest = [
        n
        for n in public
        if n not in seen
        and n not in SUBMODULES
        and _is_documentable(getattr(package, n))
    ]
    if rest:
        sections.append(("Other", rest))
    return sections


def _module_names(module: types.ModuleType) -> list[str]:
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and _is_documentable(obj)
        and getattr(obj, "__module__", None) == module.__name__
    ]


def _entry(modname: str, name: str, obj: object) -> list[str]:
    if inspect.isclass(obj):
        lines = [f".. autoclass:: {name}"]
        if issubclass(obj, tuple) and hasattr(obj, "_fields"):
            # NamedTuple: the docstring's Attributes section documents the fields.
            return lines + [""]
        return lines + ["   :members:", "   :special-members: __call__", ""]
    return [f".. autofunction:: {name}", ""]


def _page(title: str, modname: str, sections: list[tuple[str, list[str]]]) -> str:
    module = importlib.import_module(modname)
    out = [
        ".. This page is generated by docs/_ext/seqctc_docs.py; do not edit.",
        "",
        title,
        "=" * len(title),
        "",
        f".. automodule:: {modname}",
        "",
        f".. currentmodule:: {modname}",
        "",
    ]
    if not any(names for _, names in sections):
        out += [".. note::", "", f"   ``{modname}`` exports no public names yet.", ""]
    for section, names in sections:
        if len(sections) > 1:
            out += [section, "-" * len(section), ""]
        out += [".. autosummary::", "   :nosignatures:", ""]
        out += [f"   {name}" for name in names] + [""]
        for name in names:
            out += _entry(modname, name, getattr(module, name))
    return "\n".join(out) + "\n"


def _write_if_changed(path: str, text: str) -> None:
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_api_pages(app) -> None:
    """Writes ``api/seqctc.rst`` and one page per public submodule."""
    package = importlib.import_module("seqctc")
    api_dir = os.path.join(app.srcdir, "api")
    _write_if_changed(
        os.path.join(api_dir, "seqctc.rst"),
        _page("seqctc", "seqctc", _package_sections(package)),
    )
    for sub in SUBMODULES:
        modname = f"seqctc.{sub}"
        path = os.path.join(api_dir, f"{sub}.rst")
        try:
            module = importlib.import_module(modname)
        except ImportError as err:
            text = (
                ".. This page is generated by docs/_ext/seqctc_docs.py.\n\n"
                f"{modname}\n{'=' * len(modname)}\n\n.. note::\n\n"
                f"   ``{modname}`` could not be imported when these docs were "
                f"built ({type(err).__name__}).\n"
            )
            _write_if_changed(path, text)
            continue
        _write_if_changed(path, _page(modname, modname, [("", _module_names(module))]))


# ------------------------------------------------------------- optional blocks


def _resolve(srcdir: str, docname: str, target: str) -> str:
    if target.startswith("/"):
        return os.path.normpath(os.path.join(srcdir, target.lstrip("/")))
    return os.path.normpath(os.path.join(srcdir, os.path.dirname(docname), target))


def _note(text: str) -> str:
    """The admonition shown while the file is missing; none for an empty text."""
    if not text.strip():
        return ""
    return "```{note}\n" + text.strip() + "\n```"


def _rank(order: list[str], stem: str) -> tuple[int, str]:
    return (order.index(stem) if stem in order else len(order), stem)


def _expand(app, docname: str, match: re.Match) -> str:
    kind, target, body = match.group(1), match.group(2), match.group(3)
    options = [ln for ln in body.splitlines() if ln.startswith(":")]
    text = "\n".join(ln for ln in body.splitlines() if not ln.startswith(":"))
    path = _resolve(app.srcdir, docname, target)
    # A missing dependency keeps the page outdated, so an incremental build
    # picks the file up as soon as it appears.
    app.env.note_dependency(path)
    if kind == "include":
        if not os.path.isfile(path):
            return _note(text)
        app.env.note_dependency(path)
        return "```{include} " + target + "\n" + "\n".join(options) + "\n```"
    files = sorted(glob.glob(path))
    if not files:
        return _note(text)
    captions = {}
    for option in options:  # ":caption STEM: text"
        found = re.match(r"^:caption\s+(\S+):\s*(.*)$", option)
        if found:
            captions[found.group(1)] = found.group(2)
    order = list(captions)
    files.sort(key=lambda f: _rank(order, os.path.splitext(os.path.basename(f))[0]))
    blocks = []
    base = os.path.dirname(target)
    for file in files:
        app.env.note_dependency(file)
        name = os.path.basename(file)
        stem = os.path.splitext(name)[0]
        caption = captions.get(stem, stem.replace("_", " "))
        blocks.append(
            f"```{{figure}} {base}/{name}\n:width: 100%\n:alt: {stem}\n\n{caption}\n```"
        )
    return "\n\n".join(blocks)


def _on_source_read(app, docname: str, source: list[str]) -> None:
    if "{optional-" in source[0]:
        source[0] = _OPTIONAL.sub(lambda m: _expand(app, docname, m), source[0])


# ------------------------------------------------------------- offline check

_REFERENCE = re.compile(
    r"""<(?:script|link|img)\b[^>]*?\b(?:src|href)=["']([^"']+)["']"""
)


def offline_problems(outdir: str) -> list[str]:
    """Remote or missing scripts, styles and images of the built HTML pages,
    and pages with math that do not load the bundled MathJax."""
    problems = []
    for page in sorted(glob.glob(os.path.join(outdir, "**", "*.html"), recursive=True)):
        with open(page, encoding="utf-8") as f:
            html = f.read()
        name = os.path.relpath(page, outdir)
        targets = _REFERENCE.findall(html)
        for target in targets:
            if re.match(r"^(?:[a-z]+:)?//", target):
                problems.append(f"{name} loads {target}")
                continue
            if target.startswith(("#", "data:", "mailto:")):
                continue
            local = os.path.join(os.path.dirname(page), target.split("?")[0])
            if not os.path.exists(os.path.normpath(local)):
                problems.append(f"{name} refers to {target}, which is not built")
        if 'class="math' in html and not any(
            "_static/mathjax/" in t and t.split("?")[0].endswith(".js") for t in targets
        ):
            problems.append(f"{name} has math but does not load _static/mathjax")
    return problems


def _check_offline(app, exc) -> None:
    if exc is not None or app.builder.format != "html":
        return
    problems = offline_problems(app.outdir)
    if problems:
        from sphinx.errors import ExtensionError

        raise ExtensionError(
            "The built pages do not read offline:\n  " + "\n  ".join(problems)
        )


def setup(app):
    app.connect("builder-inited", write_api_pages)
    app.connect("source-read", _on_source_read)
    # After sphinx-mathjax-offline has copied MathJax (default priority 500).
    app.connect("build-finished", _check_offline, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
