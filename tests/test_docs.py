"""The code on the documentation pages runs and does what the pages say.

Every ```python block in ``docs/**/*.md`` and ``README.md`` is runnable: the blocks
of one page run in order in one namespace, like a notebook. A block that starts
with ``>>>`` is a doctest (NORMALIZE_WHITESPACE and ELLIPSIS); any other block is
executed and must not raise (the blocks hold their own ``assert``s against
brute force, numpy, optax or torch). Code that must not run is written as
``{code-block} python`` instead.

All pages run in one child process (one JAX start-up, one compilation cache),
with the strict promotion rules of ``conftest.py`` and its XLA flags (backend
optimisations off where XLA knows the flags): the arrays on the pages are tiny,
so compiling dominates, and the flags change compile time, not results. A page
that uses a ``seqctc.<name>`` the package does not export fails with the names.
"""

from __future__ import annotations

import doctest
import importlib
import json
import os
import pathlib
import re
import subprocess
import sys
import traceback

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
USES = re.compile(r"\bseqctc\.((?:nn\.|torch_compat\.)?[A-Za-z_]\w*)")
FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def pages() -> list[pathlib.Path]:
    """README.md and every docs page with a ```python block."""
    found = [ROOT / "README.md"]
    for path in sorted(DOCS.rglob("*.md")):
        if path.relative_to(DOCS).parts[0] not in ("_build", "_results"):
            found.append(path)
    return [p for p in found if FENCE.search(p.read_text(encoding="utf-8"))]


def blocks(page: pathlib.Path) -> list[tuple[int, str]]:
    """``(first line number, code)`` of each ```python block of ``page``."""
    text = page.read_text(encoding="utf-8")
    return [
        (text[: m.start()].count("\n") + 2, m.group(1)) for m in FENCE.finditer(text)
    ]


def missing_names(code: str) -> list[str]:
    """The ``seqctc.<name>`` used in ``code`` that the package does not export."""
    import seqctc

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
        if hasattr(module, name):
            continue
        try:  # a submodule, e.g. ``from seqctc.torch_compat import ...``
            importlib.import_module(f"{module.__name__}.{name}")
        except ImportError:
            missing.append(dotted)
    return missing


def run_page(page: pathlib.Path) -> tuple[str, str]:
    """Runs one page's blocks; returns ``("passed" | "failed", detail)``."""
    name = str(page.relative_to(ROOT))
    page_blocks = blocks(page)
    missing = missing_names("\n".join(code for _, code in page_blocks))
    if missing:
        return "failed", f"{name}: uses names seqctc does not export: {missing}"
    namespace: dict = {"__name__": "docs_page"}
    parser = doctest.DocTestParser()
    for line, code in page_blocks:
        try:
            if code.lstrip().startswith(">>>"):
                runner = doctest.DocTestRunner(optionflags=FLAGS)
                test = parser.get_doctest(code, namespace, name, name, line)
                report: list[str] = []
                runner.run(test, out=report.append, clear_globs=False)
                if runner.failures:
                    return "failed", f"{name}, block at line {line}:\n" + "".join(
                        report
                    )
            else:
                exec(compile(code, f"{name}:{line}", "exec"), namespace)
        except Exception:
            return "failed", f"{name}, block at line {line}:\n{traceback.format_exc()}"
    return "passed", name


def _child_main() -> None:
    import jax

    jax.config.update("jax_numpy_rank_promotion", "raise")
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    results = {str(p.relative_to(ROOT)): run_page(p) for p in pages()}
    sys.stdout.write("\n@@RESULTS@@" + json.dumps(results))


def _run_child() -> subprocess.CompletedProcess:
    # XLA_FLAGS come from conftest.py: the fast-compile flags where XLA knows them.
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "tests"), str(ROOT), env.get("PYTHONPATH", "")]
    )
    return subprocess.run(
        [sys.executable, "-c", "import test_docs; test_docs._child_main()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.long
def test_docs_code_runs():
    child = _run_child()
    assert "@@RESULTS@@" in child.stdout, child.stderr[-5000:]
    results = json.loads(child.stdout.split("@@RESULTS@@")[-1])
    assert results, "no documentation page with code was found"
    failed = [detail for status, detail in results.values() if status == "failed"]
    assert not failed, "\n\n".join(failed)


def test_api_pages_list_every_public_name():
    import seqctc

    seqctc_docs = _docs_extension()
    listed = {n for _, names in seqctc_docs._package_sections(seqctc) for n in names}
    exported = getattr(seqctc, "__all__", None) or [
        n for n in vars(seqctc) if not n.startswith("_")
    ]
    expected = {n for n in exported if n not in seqctc_docs.SUBMODULES}
    assert listed == expected
    assert "lengths_to_paddings" in listed and "ctc_loss" in listed


# ------------------------------------------------------------ offline reading


def _docs_extension():
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        return importlib.import_module("seqctc_docs")
    finally:
        sys.path.remove(str(DOCS / "_ext"))


def test_offline_check_flags_remote_and_missing_files(tmp_path):
    seqctc_docs = _docs_extension()
    (tmp_path / "_static" / "mathjax").mkdir(parents=True)
    (tmp_path / "_static" / "mathjax" / "tex-chtml.js").write_text("")
    (tmp_path / "_static" / "style.css").write_text("")
    good = (
        '<link rel="stylesheet" href="_static/style.css?v=1">'
        '<script defer="defer" src="_static/mathjax/tex-chtml.js"></script>'
        '<div class="math notranslate nohighlight">\\[x\\]</div>'
    )
    (tmp_path / "good.html").write_text(good)
    assert seqctc_docs.offline_problems(str(tmp_path)) == []
    cdn = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "cdn.html").write_text(
        f'<script src="{cdn}"></script><span class="math">\\(x\\)</span>'
        '<img src="../_images/missing.png">'
    )
    problems = seqctc_docs.offline_problems(str(tmp_path))
    assert problems == [
        f"sub/cdn.html loads {cdn}",
        "sub/cdn.html refers to ../_images/missing.png, which is not built",
        "sub/cdn.html has math but does not load _static/mathjax",
    ]


PAGE = """# Math and figures

Inline $\\alpha_t(s) = \\log \\sum_{s'} e^{\\alpha_{t-1}(s')}$ and display:

$$
\\mathcal{L}_{\\mathrm{CTC}} = -\\log \\sum_{\\pi \\in \\mathcal{B}^{-1}(l)}
\\prod_t y_t^{\\pi_t}
$$

```{optional-figures} _results/bench_demo_*.png
:caption bench_demo_b: Second in name order, first by its caption line.
Shown while no figure exists.
```

```{optional-figures} _static/demo_*.png
Shown while no figure exists.
```

```{optional-figures} _results/none_*.png
No figure matches this pattern.
```
"""


def _png() -> bytes:
    """A valid 1 x 1 grey PNG."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x80"))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def built_page(tmp_path_factory) -> pathlib.Path:
    """One page built with the docs' own configuration (``-c docs``), holding
    math and figures from ``_results/`` and ``_static/``; its HTML path.

    Needs the ``docs`` extra; skipped without it.
    """
    for module in ("sphinx", "myst_parser", "furo", "sphinx-mathjax-offline"):
        pytest.importorskip(module)
    root = tmp_path_factory.mktemp("site")
    src, out = root / "src", root / "html"
    for folder, names in [
        ("_results", ["bench_demo_a", "bench_demo_b"]),
        ("_static", ["demo_c"]),
    ]:
        (src / folder).mkdir(parents=True)
        for name in names:
            (src / folder / f"{name}.png").write_bytes(_png())
    (src / "index.md").write_text(PAGE, encoding="utf-8")
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", "-c", str(DOCS)]
        + ["-D", "exclude_patterns=api/*,_results", str(src), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"),
    )
    assert build.returncode == 0, build.stderr[-3000:]
    return out / "index.html"


def test_pages_show_figures_from_results_and_static(built_page):
    html = built_page.read_text(encoding="utf-8")
    images = re.findall(r'<img[^>]*src="([^"]+)"', html)
    assert [pathlib.Path(i).name for i in images] == [
        "bench_demo_b.png",  # captioned first
        "bench_demo_a.png",
        "demo_c.png",
    ]
    for image in images:
        assert (built_page.parent / image).read_bytes() == _png()
    assert "Second in name order, first by its caption line." in html
    assert html.count("Shown while no figure exists.") == 0
    assert "No figure matches this pattern." in html
    # The built site loads nothing from outside itself (the build checks it too).
    assert _docs_extension().offline_problems(str(built_page.parent)) == []


def _browser() -> str | None:
    import shutil

    for name in ("chromium-headless-shell", "chromium", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def test_math_renders_offline_in_a_headless_browser(built_page):
    """The built page shows typeset formulas in a browser that can reach no
    network (every host name fails to resolve).

    Needs a Chromium (``apt-get install chromium-headless-shell``); skipped
    without one. Writes a screenshot, ``math.png``, next to the page.
    """
    browser = _browser()
    if browser is None:
        pytest.skip("no headless Chromium installed")
    page = built_page.as_uri()
    out = built_page.parent
    flags = [
        "--no-sandbox",
        "--disable-gpu",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--virtual-time-budget=15000",
    ]
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", page],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    subprocess.run(
        [browser, *flags, "--window-size=900,500", f"--screenshot={out / 'math.png'}"]
        + [page],
        capture_output=True,
        timeout=120,
    )
    # MathJax replaced both formulas by typeset output; no raw TeX is left.
    assert dom.count("<mjx-container") == 2, dom[-2000:]
    assert "\\mathcal" not in dom and "<mjx-merror" not in dom
    assert (out / "math.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
