"""Sphinx configuration: MyST Markdown pages, the furo theme, API reference from docstrings."""

from __future__ import annotations

import quickchat_async


project = "quickchat-async"
author = "quickchat-async developers"
copyright = "2026, quickchat-async developers"
release = quickchat_async.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# Docstrings are Google style and write `name` for code.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
default_role = "code"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "furo"
html_title = f"quickchat-async {release}"
