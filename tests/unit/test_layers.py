"""The layers import downwards only: no package cycles (docs/architecture.md).

Every ``import streamlearn...`` in the source, including imports inside functions, is an
edge from the importing layer to the imported one; each layer may only use lower ones.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# lowest first; a layer may import itself and any layer before it
ORDER = ["core", "schemas", "featurestore", "models", "project", "streams", "replay", "sdk", "tools", "cli"]
FOLDERS = {"schemas": "schemas", "featurestore": "featurestore", "models": "models", "streams": "streams",
           "replay": "replay"}
SUBPACKAGES = {"project", "sdk", "tools", "cli"}  # under streamlearn/


def layer_of_file(path: Path) -> str | None:
    rel = path.relative_to(ROOT).parts
    if rel[0] in FOLDERS:
        return rel[0]
    if rel[0] == "streamlearn":
        if rel[1] == "__main__.py":
            return "cli"
        return rel[1] if rel[1] in SUBPACKAGES else "core"
    return None


def layer_of_module(name: str) -> str:
    parts = name.split(".")
    if len(parts) < 2:
        return "core"
    return parts[1] if parts[1] in FOLDERS or parts[1] in SUBPACKAGES else "core"


def test_layers_import_downwards_only():
    wrong = []
    for path in ROOT.rglob("*.py"):
        if any(p in path.parts for p in (".venv", "tests", "build", ".git")):
            continue
        src = layer_of_file(path)
        if src is None:
            continue
        for m in re.finditer(r"^\s*(?:from|import)\s+(streamlearn(?:\.\w+)*)", path.read_text(), re.M):
            dst = layer_of_module(m.group(1))
            if ORDER.index(dst) > ORDER.index(src):
                wrong.append(f"{path.relative_to(ROOT)}: {src} imports {m.group(1)} ({dst})")
    assert wrong == []
