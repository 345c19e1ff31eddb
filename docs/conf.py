"""Sphinx configuration of the fgn_arrays documentation.

Build with warnings as errors, from the repository root::

    sphinx-build -W docs docs/_build/html
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
    "numpydoc",
    "myst_parser",
]

source_suffix = {
    ".rst": "restructuredtext",
    ".md": "markdown",
}
root_doc = "index"
exclude_patterns = ["_build"]

# -- MyST (derivation.md) -----------------------------------------------------

# $...$ / $$...$$ math and bare LaTeX amsmath environments.
myst_enable_extensions = ["dollarmath", "amsmath"]

# -- autodoc / numpydoc -------------------------------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# Members are listed explicitly in api.rst; numpydoc must not add its own
# autosummary tables of them.
numpydoc_show_class_members = False

# -- HTML ---------------------------------------------------------------------

html_theme = "alabaster"
html_title = f"fgn_arrays {release}"
