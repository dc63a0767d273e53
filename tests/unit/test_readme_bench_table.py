"""The README's Performance section shows the latest `streamlearn bench` table (issue 17: "the
README's Performance section shows the latest table with the machine and load it ran on"):
every variant the bench runs, the three ratio lines, and the commit, machine and load."""

from __future__ import annotations

import re
from pathlib import Path

from streamlearn.tools.bench import VARIANTS

README = Path(__file__).resolve().parents[2] / "README.md"


def _performance_section() -> str:
    text = README.read_text()
    start = text.index("\n## Performance\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def test_the_readme_shows_the_latest_bench_table_with_its_machine_and_load():
    section = _performance_section()
    blocks = re.findall(r"```\n(variant .*?)```", section, re.S)
    assert len(blocks) == 1, "one bench table in README's Performance section"
    rows = {line.split("  ")[0].strip() for line in blocks[0].splitlines()}
    names = {"learner (labels)" if v == "learner" else "scale-out 1 worker" if v == "scale-out" else v
             for v in VARIANTS}
    assert names <= rows, f"variants missing from the table: {sorted(names - rows)}"
    for ratio in ("end-to-end/faust-ceiling", "end-to-end/bare", "end-to-end/transport-ceiling"):
        assert re.search(rf"^ratio {ratio}: \d+\.\d\d$", blocks[0], re.M), ratio
    intro = " ".join(section[:section.index("```\nvariant ")].split())
    assert re.search(r"at [0-9a-f]{7}", intro), "the commit it ran at"
    assert "CPUs" in intro and re.search(r"load average [\d.]+ at start and [\d.]+ at the end", intro)
