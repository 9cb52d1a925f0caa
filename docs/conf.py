"""Sphinx configuration for the seqctc documentation.

Build: ``pip install -e ".[docs]" && sphinx-build -W -b html docs docs/_build/html``.
No network is needed, to build or to read: intersphinx is off, every page is
local, and MathJax is bundled (``sphinx-mathjax-offline``).
"""

import os
import sys

sys.path.insert(0, os.path.abspath("_ext"))

# Import the package the way users do; keras/torch are never imported here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import seqctc  # noqa: E402

project = "seqctc"
author = "the seqctc authors"
copyright = "2026, the seqctc authors"  # noqa: A001
version = release = seqctc.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    # MathJax 3 bundled into _static/mathjax: formulas render offline.
    "sphinx-mathjax-offline",
    "sphinx.ext.viewcode",
    "seqctc_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_results", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

# MyST: $...$ and $$...$$ math, amsmath environments, ::: fences, heading anchors.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

# autodoc / autosummary / napoleon (Google-style docstrings).
autosummary_generate = False  # the API pages are written by seqctc_docs
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_type_aliases = {"ArrayLike": "ArrayLike", "Array": "Array"}
autodoc_default_options = {"exclude-members": "__weakref__"}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = False

# No network: no intersphinx; MathJax is served from _static/mathjax (the
# seqctc_docs extension fails the build if a page loads it from elsewhere).
html_theme = "furo"
html_title = f"seqctc {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {"navigation_with_keys": True}
pygments_style = "friendly"
pygments_dark_style = "monokai"
