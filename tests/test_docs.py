"""The code on the documentation pages runs and prints what the pages say.

Every ```python block in ``docs/**/*.md`` and ``README.md`` is runnable: the blocks
of one page run in order in one namespace, like a notebook. A block that starts
with ``>>>`` is a doctest (NORMALIZE_WHITESPACE and ELLIPSIS); any other block is
executed and must not raise (they hold their own ``assert``s). Code that must not
run is written as ``{code-block} python`` instead. A page is skipped, with the
names in the reason, only while a ``seqctc.<name>`` it uses is not exported yet.
"""

from __future__ import annotations

import doctest
import importlib
import pathlib
import re
import sys

import pytest

import seqctc

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
USES = re.compile(r"\bseqctc\.((?:nn\.|torch_compat\.)?[A-Za-z_]\w*)")
FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def _pages() -> list[pathlib.Path]:
    pages = [ROOT / "README.md"]
    for path in sorted(DOCS.rglob("*.md")):
        parts = path.relative_to(DOCS).parts
        if parts[0] not in ("_build", "_results"):
            pages.append(path)
    return [p for p in pages if FENCE.search(p.read_text(encoding="utf-8"))]


def _missing_names(code: str) -> list[str]:
    missing = []
    for dotted in sorted(set(USES.findall(code))):
        module, name = seqctc, dotted
        if "." in dotted:
            sub, name = dotted.split(".", 1)
            try:
                module = importlib.import_module(f"seqctc.{sub}")
            except ImportError:
                missing.append(dotted)
                continue
        if not hasattr(module, name):
            missing.append(dotted)
    return missing


def _run_blocks(blocks: list[tuple[int, str]], name: str) -> None:
    namespace: dict = {"__name__": f"docs_{name}"}
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for line, code in blocks:
        if code.lstrip().startswith(">>>"):
            test = parser.get_doctest(code, namespace, name, name, line)
            failures, _ = runner.run(test, out=sys.stdout.write, clear_globs=False)
            assert failures == 0, f"doctest in {name} (line {line}) failed"
        else:
            exec(compile(code, f"{name}:{line}", "exec"), namespace)  # noqa: S102


@pytest.mark.parametrize(
    "page", _pages(), ids=lambda p: str(p.relative_to(ROOT)).replace("/", "::")
)
def test_page_code_runs(page: pathlib.Path):
    text = page.read_text(encoding="utf-8")
    blocks = [
        (text[: m.start()].count("\n") + 2, m.group(1)) for m in FENCE.finditer(text)
    ]
    missing = _missing_names("\n".join(code for _, code in blocks))
    if missing:
        pytest.skip(f"not exported yet: {', '.join(missing)}")
    _run_blocks(blocks, str(page.relative_to(ROOT)))


def test_api_pages_list_every_public_name():
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        seqctc_docs = importlib.import_module("seqctc_docs")
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    listed = {n for _, names in seqctc_docs._package_sections(seqctc) for n in names}
    exported = getattr(seqctc, "__all__", None) or [
        n for n in vars(seqctc) if not n.startswith("_")
    ]
    expected = {n for n in exported if n not in seqctc_docs.SUBMODULES}
    assert listed == expected
    assert "lengths_to_paddings" in listed and "extend_with_blanks" in listed
