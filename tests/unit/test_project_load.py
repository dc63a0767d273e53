"""A project's feature view may be written in Python instead of TOML; mistakes name the key."""

from __future__ import annotations

import pytest

from streamlearn.project import Project, ProjectError


def test_a_view_declared_in_python_is_used_and_namespaced(tmp_path):
    (tmp_path / "streamlearn.toml").write_text('[features]\nview = "pyviews_a:VIEW"\n[models]\nchampion = "logreg"\n')
    (tmp_path / "pyviews_a.py").write_text(
        "from streamlearn.featurestore.definitions import FeatureView\nVIEW = FeatureView('mine', 3)\n")
    project = Project.load(tmp_path)
    assert (project.view.name, project.view.version) == ("mine", 3)
    assert project.keys.entity("x") == "sl:v1:ent:mine.v3:x" and project.champion == "logreg"


@pytest.mark.parametrize("line, message", [
    ('view = "pyviews_b:NOPE"', "features.view: cannot import 'pyviews_b:NOPE'"),
    ('view = "pyviews_b:X"', "features.view: 'pyviews_b:X' is not a FeatureView"),
])
def test_a_python_view_that_is_missing_or_not_a_view_is_one_line(tmp_path, line, message):
    (tmp_path / "streamlearn.toml").write_text(f"[features]\n{line}\n")
    (tmp_path / "pyviews_b.py").write_text("X = 1\n")
    with pytest.raises(ProjectError, match=message) as info:
        Project.load(tmp_path)
    assert "streamlearn.toml" in str(info.value) and "\n" not in str(info.value)
