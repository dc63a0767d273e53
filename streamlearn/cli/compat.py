"""Deprecated spellings of CLI options, kept working for one release with a warning.

One meaning per word: ``--json`` prints JSON (a flag) and a file is ``--json-out FILE``;
``--from``/``--to`` are times and input files are ``--input``; a model is ``--spec``;
``republish`` names its target ``--topic``. The old spellings are rewritten here, before
typer parses the line, because typer cannot make one option both a flag and a value:

* ``demo``/``bench`` ``--json FILE`` (a value that is not an option follows) -> ``--json-out FILE``
* ``produce``/``feedback`` ``--from FILE`` -> ``--input FILE``
* ``tail --since T`` -> ``--from T``
* ``backtest --model S`` -> ``--spec S``
* ``retrain --train-from T`` -> ``--from T``, ``--eval-to T`` -> ``--to T``
* ``replay republish --to TOPIC [--to-time T]`` (no ``--topic``, ``--to`` not a time)
  -> ``--topic TOPIC [--to T]``; ``--to-time`` -> ``--to`` otherwise

>>> rewrite(["produce", "--from", "ev.jsonl", "--rate", "5"])[0]
['produce', '--input', 'ev.jsonl', '--rate', '5']
>>> rewrite(["bench", "--json", "b.json"])[0], rewrite(["bench", "--json", "--events", "9"])[0]
(['bench', '--json-out', 'b.json'], ['bench', '--json', '--events', '9'])
>>> rewrite(["replay", "republish", "--to", "my.events", "--to-time", "2024-05-02"])[0]
['replay', 'republish', '--topic', 'my.events', '--to', '2024-05-02']
>>> rewrite(["replay", "republish", "--topic", "t", "--to", "2024-05-02"])
(['replay', 'republish', '--topic', 't', '--to', '2024-05-02'], [])
>>> rewrite(["backtest", "--model=hat"])[0], rewrite(["tail", "predictions", "--since", "0"])[0]
(['backtest', '--spec=hat'], ['tail', 'predictions', '--from', '0'])
"""

from __future__ import annotations

# command -> {old option: new option}
RENAMED: dict[str, dict[str, str]] = {
    "produce": {"--from": "--input"},
    "feedback": {"--from": "--input"},
    "tail": {"--since": "--from"},
    "backtest": {"--model": "--spec"},
    "retrain": {"--train-from": "--from", "--eval-to": "--to"},
}
JSON_FILE_COMMANDS = ("demo", "bench")
COMMANDS = (*RENAMED, *JSON_FILE_COMMANDS, "replay")
GLOBAL_VALUE_OPTIONS = ("--project",)  # global options that take a value (skipped to find the command)


def _command(args: list[str]) -> int | None:
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            return None
        if a in GLOBAL_VALUE_OPTIONS:
            i += 2
            continue
        if not a.startswith("-"):
            return i if a in COMMANDS else None
        i += 1
    return None


def _is_time(text: str) -> bool:
    from streamlearn.formats import parse_time

    try:
        parse_time(text)
    except (ValueError, TypeError, OverflowError):
        return False
    return True


def _split(a: str) -> tuple[str, str | None]:
    name, eq, value = a.partition("=")
    return (name, value) if eq and a.startswith("--") else (a, None)


def hoist_globals(argv: list[str]) -> list[str]:
    """``--project DIR`` is global but may be written after the command too
    (``streamlearn demo --project examples/trips``): move it in front.

    >>> hoist_globals(["demo", "--events", "5", "--project", "ex/trips"])
    ['--project', 'ex/trips', 'demo', '--events', '5']
    """
    front: list[str] = []
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            out += argv[i:]
            break
        if a in GLOBAL_VALUE_OPTIONS and i + 1 < len(argv):
            front += argv[i : i + 2]
            i += 2
            continue
        if a.split("=", 1)[0] in GLOBAL_VALUE_OPTIONS and "=" in a:
            front.append(a)
        else:
            out.append(a)
        i += 1
    return front + out


def rewrite(argv: list[str]) -> tuple[list[str], list[str]]:
    """(argv with deprecated spellings replaced, one warning per replaced spelling)."""
    argv = hoist_globals(argv)
    at = _command(argv)
    if at is None:
        return argv, []
    cmd = argv[at]
    head, rest = argv[: at + 1], argv[at + 1:]
    if cmd == "replay":
        if not rest or rest[0] != "republish":
            return argv, []
        head, rest = head + rest[:1], rest[1:]
    end = rest.index("--") if "--" in rest else len(rest)
    body, tail = rest[:end], rest[end:]
    warnings: list[str] = []
    out: list[str] = []

    def renamed(old: str, new: str, note: str = "") -> None:
        msg = f"{old} is deprecated, use {new}{note}"
        if msg not in warnings:
            warnings.append(msg)

    if cmd == "replay":  # republish
        names = [_split(a)[0] for a in body]
        old_form = "--topic" not in names
        for i, a in enumerate(body):
            name, value = _split(a)
            if name == "--to" and old_form:
                v = value if value is not None else (body[i + 1] if i + 1 < len(body) else "")
                if not _is_time(v):  # a topic: the old meaning of --to
                    renamed("--to TOPIC", "--topic TOPIC", " (--to is now the end time)")
                    out.append("--topic" if value is None else f"--topic={value}")
                    continue
            if name == "--to-time":
                renamed("--to-time", "--to")
                out.append("--to" if value is None else f"--to={value}")
                continue
            out.append(a)
        return head + out + tail, warnings
    table = RENAMED.get(cmd, {})
    i = 0
    while i < len(body):
        a = body[i]
        name, value = _split(a)
        if cmd in JSON_FILE_COMMANDS and name == "--json":
            if value is not None:
                renamed("--json FILE", "--json-out FILE", " (--json alone prints JSON)")
                out.append(f"--json-out={value}")
            elif i + 1 < len(body) and not body[i + 1].startswith("-"):
                renamed("--json FILE", "--json-out FILE", " (--json alone prints JSON)")
                out += ["--json-out", body[i + 1]]
                i += 1
            else:
                out.append(a)
        elif name in table:
            renamed(name, table[name])
            out.append(table[name] if value is None else f"{table[name]}={value}")
        else:
            out.append(a)
        i += 1
    return head + out + tail, warnings
