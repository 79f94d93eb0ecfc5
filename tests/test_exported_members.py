"""The public surface: a sorted, complete __all__ of documented names."""

from __future__ import annotations

import inspect

import quickchat_async


def test_all_is_sorted():
    """__all__ is sorted (constants, classes, then the rest), so additions are easy to review."""
    names = quickchat_async.__all__

    def kind(name: str) -> int:
        return 0 if name.isupper() else 1 if name[0].isupper() else 2

    assert names == sorted(names, key=lambda name: (kind(name), name))


def test_all_is_complete():
    """Every public name of the package is in __all__, and every name in it exists."""
    public = {
        name
        for name, value in vars(quickchat_async).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }

    assert public == set(quickchat_async.__all__) - {"__version__"}


def test_public_names_documented():
    """Every exported class and function has a docstring."""
    for name in quickchat_async.__all__:
        value = getattr(quickchat_async, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), name


def test_version():
    """__version__ is the package's version string."""
    assert quickchat_async.__version__.count(".") >= 2
