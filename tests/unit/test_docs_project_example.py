"""The project TOML shown in README.md ("Projects") and docs/projects.md is a project that
loads: written with the code `streamlearn init` generates (project.py, sample.jsonl), it
passes Project.load (as `plan` does), so the example cannot rot again (it once named a
`tree` challenger it never declared)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streamlearn.project import Project
from streamlearn.project.scaffold import init_project

ROOT = Path(__file__).resolve().parents[2]


def project_toml(doc: Path) -> str:
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", doc.read_text(), flags=re.S) if "[project]" in b]
    assert len(blocks) == 1, f"{doc}: expected one project TOML block, found {len(blocks)}"
    return blocks[0]


@pytest.mark.parametrize("doc", ["README.md", "docs/projects.md"])
def test_the_documented_project_toml_loads(tmp_path: Path, doc: str) -> None:
    init_project(tmp_path / "p")
    (tmp_path / "p" / "streamlearn.toml").write_text(project_toml(ROOT / doc))
    project = Project.load(tmp_path / "p")
    assert project.name == "payments" and project.task.kind == "binary"
    assert sorted(project.specs) == ["main", "tree"]
    assert project.resolve_spec("tree") == project.challenger
    s = project.settings
    names = [s.topic_events, s.topic_predictions, s.topic_feedback, s.topic_deadletter, s.topic_shadow,
             s.topic_lifecycle, s.topic_drift, s.app_id, s.redis_prefix]
    assert all(n.startswith("payments") for n in names), names  # nothing shared with another project
    assert len(project.demo_items(20, 7)) == 20
