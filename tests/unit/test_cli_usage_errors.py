"""click's usage mistakes (extra argument, unknown option, bad value, missing argument) are one
``streamlearn: ...`` line with exit 2, as docs/producing.md's "CLI conventions" promise; help and
the bare command still print help."""

from __future__ import annotations

import pytest

from streamlearn.cli import app
from streamlearn.cli.errors import run


@pytest.fixture
def cli(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # typer's box would wrap: a one-line check must not depend on it

    def call(*argv: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as info:
            run(app, list(argv))
        out, err = capsys.readouterr()
        return info.value.code, out, err

    return call


@pytest.mark.parametrize(("argv", "parts"), [
    (["models", "canary", "2", "0.1"],
     ["streamlearn: models canary: ", "unexpected extra argument", "(0.1)", "usage: streamlearn models canary"]),
    (["models", "canary"], ["streamlearn: models canary: Missing argument", "usage: "]),
    (["demo", "--bogus"], ["streamlearn: demo: No such option: --bogus", "usage: streamlearn demo [OPTIONS]"]),
    (["gate-eval", "--runs", "-1"], ["streamlearn: gate-eval: ", "--runs", "greater than or equal to 1"]),
    (["produce", "--events", "x"], ["streamlearn: produce: ", "'--events'"]),
    (["--bogus"], ["streamlearn: No such option: --bogus"]),
])
def test_usage_mistakes_are_one_line_and_exit_2(cli, argv, parts) -> None:
    code, out, err = cli(*argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and out == "" and len(lines) == 1, err
    for part in parts:
        assert part in lines[0], (part, lines[0])
    assert "╭" not in err and "Traceback" not in err


def test_help_still_prints_help_and_exits_0(cli) -> None:
    code, out, _ = cli("models", "canary", "--help")
    assert code == 0 and "--fraction" in out
    code, out, err = cli("models")  # a group without a command: its help, as before
    assert code == 2 and "canary" in out + err


def test_version_exits_0(cli) -> None:
    code, out, _ = cli("--version")
    assert code == 0 and out.startswith("streamlearn ")
