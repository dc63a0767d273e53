"""``drift-eval``'s flags do what its help says: ``--no-sea`` drops the SEA streams and the
live-like "alarms that pay off" runs; ``--length`` sets the live-like runs' length too (they
ran 100,000 events and SEA whatever the flags said: 2 minutes for a 3,000-event ask)."""

from __future__ import annotations

import pytest

from streamlearn.cli import app
from streamlearn.cli.errors import run


def test_no_sea_and_length_reach_every_section(capsys, monkeypatch) -> None:
    monkeypatch.delenv("STREAMLEARN_PROJECT", raising=False)
    with pytest.raises(SystemExit) as info:
        run(app, ["drift-eval", "--seeds", "1", "--length", "1500", "--no-sea"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert "1 seeded streams of 1500 events each" in out
    assert "1,500 drift-free events each" in out and "100,000 drift-free" not in out
    assert "alarms that pay off" not in out and "sea" not in out.lower().replace("seeded", "")
