"""Runs the ``>>>`` examples of every module through its real ``streamlearn.*`` name."""

import doctest
import importlib
import pkgutil

import pytest

import streamlearn


def _modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(streamlearn.__path__, "streamlearn."):
        names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
