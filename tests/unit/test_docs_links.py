"""Every relative link in README.md and docs/*.md points to a file that exists and, with a
#fragment, to a heading of that file (GitHub's anchor rules), so moving a section breaks a test,
not a reader's click."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, inline code removed (neither holds links)."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            out.append(re.sub(r"`[^`]*`", "", line))
    return out


def github_anchor(heading: str) -> str:
    """GitHub's id for a heading: markup and link targets dropped, lower case, punctuation
    other than - and _ removed, each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").replace("*", "").lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor, with GitHub's -1, -2 ... for repeated headings."""
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        m = None if fenced else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = github_anchor(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_the_anchor_rules_match_github():
    assert github_anchor("Your own events: from `streamlearn init` to a running project") == \
        "your-own-events-from-streamlearn-init-to-a-running-project"
    assert github_anchor("Scale-out: one learner, many scorers") == "scale-out-one-learner-many-scorers"
    assert github_anchor("kcat older than librdkafka 2.2") == "kcat-older-than-librdkafka-22"
    assert github_anchor("Operating it: HTTP API, metrics, alerts, docker compose") == \
        "operating-it-http-api-metrics-alerts-docker-compose"


def _links() -> list[tuple[Path, str]]:
    return [(doc, m.group(1)) for doc in DOCS for line in _prose_lines(doc.read_text())
            for m in LINK.finditer(line)]


def test_the_scan_finds_the_links():
    targets = {t for _, t in _links()}
    assert "docs/performance.md" in targets and "../README.md#settings" in targets


@pytest.mark.parametrize(("doc", "target"), _links(), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_every_relative_link_resolves(doc: Path, target: str):
    if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not a file of the repository
        return
    path, _, fragment = target.partition("#")
    dest = (doc.parent / path).resolve() if path else doc
    assert dest.exists(), f"{doc.relative_to(ROOT)}: {target} names no file"
    if fragment:
        assert dest.suffix == ".md", f"{doc.relative_to(ROOT)}: {target}: an anchor in a file that is not markdown"
        assert fragment in anchors(dest), \
            f"{doc.relative_to(ROOT)}: {target}: no such heading in {dest.relative_to(ROOT)}"
