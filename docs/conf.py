"""Sphinx configuration of the fgn_arrays documentation.

Build with warnings as errors, from the repository root, then check that
the site loads nothing from the network (MathJax is served from the site)::

    sphinx-build -W docs docs/_build/html
    python docs/check_site.py docs/_build/html
"""

import os
import sys

# Import the package from the repository root, so the docs build from a
# checkout without installing it.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import fgn_arrays  # noqa: E402

# -- Project ------------------------------------------------------------------

project = "fgn_arrays"
author = "the fgn_arrays developers"
copyright = "2026, the fgn_arrays developers"
release = fgn_arrays.__version__
version = ".".join(release.split(".")[:2])

# -- General ------------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    # MathJax 3 shipped with the site (copied to _static/mathjax), so that
    # math renders offline: no page loads anything from a CDN (check_site.py).
    "sphinx-mathjax-offline",
    "numpydoc",
    "myst_parser",
]

source_suffix = {
    ".rst": "restructuredtext",
    ".md": "markdown",
}
root_doc = "index"
exclude_patterns = ["_build"]
# Labelled equations (MyST: $$ ... $$ (label)) are numbered per page, (1), (2),
# ...; {eq}`label` refers to one, from any page. Unlabelled ones are not numbered.
math_number_all = False
math_eqref_format = "({number})"

# -- MyST (the .md pages) -----------------------------------------------------

# $...$ / $$...$$ math and bare LaTeX amsmath environments.
myst_enable_extensions = ["dollarmath", "amsmath"]

# -- autodoc / numpydoc -------------------------------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# Members are listed explicitly in api.rst; numpydoc must not add its own
# autosummary tables of them.
numpydoc_show_class_members = False

# -- HTML ---------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"fgn_arrays {release}"
html_theme_options = {
    # Nothing that is fetched at view time: no external icon links, no
    # version switcher, no analytics.
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_show_sourcelink = False
# MathJax itself, from _static (sphinx-mathjax-offline sets the same path).
mathjax_path = "mathjax/tex-chtml.js"
