"""Runs the ``>>>`` examples of every module through its real ``streamlearn.*`` name."""

import doctest
import importlib
import pkgutil

import pytest

import streamlearn

SUBPACKAGES = ["featurestore", "models", "replay", "schemas", "streams"]


def _modules() -> list[str]:
    """Every module of the namespace, subpackages included (they map to other folders)."""
    names = [m.name for m in pkgutil.walk_packages(streamlearn.__path__, "streamlearn.")]
    for sub in SUBPACKAGES:
        pkg = importlib.import_module(f"streamlearn.{sub}")
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, f"streamlearn.{sub}.")]
    return sorted(set(n for n in names if not n.endswith("__main__")))


@pytest.mark.parametrize("name", _modules())
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
