"""Tools that make a folder of their own in the temporary directory remove it after a
success: the worker harness and the Redis-bytes probe (sl-harness-*, sl-redis-bytes-*), and
``streamlearn infra up`` at Ctrl-C unless ``--keep`` or ``--workdir``. The harness, which has
no broker on purpose, prints no librdkafka "Connect to ... failed" line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import wait_for


def _env(tmp: Path) -> dict[str, str]:
    tmp.mkdir(exist_ok=True)
    return {**{k: v for k, v in os.environ.items() if not k.startswith("STREAMLEARN_")}, "TMPDIR": str(tmp)}


@pytest.mark.parametrize("tool", ["worker_harness", "redis_bytes"])
def test_harnesses_remove_their_folder_and_are_quiet(tmp_path, tool):
    tmp = tmp_path / "tmp"
    proc = subprocess.run([sys.executable, "-m", f"streamlearn.tools.{tool}", "--events", "300"],
                          capture_output=True, text=True, timeout=180, env=_env(tmp))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(tmp.iterdir()) == []
    assert "Connect to" not in proc.stderr and "rdkafka" not in proc.stderr, proc.stderr


def _infra_up(tmp: Path, *args: str) -> tuple[Path, str]:
    proc = subprocess.Popen([sys.executable, "-m", "streamlearn", "infra", "up", "--no-create-topics", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp))
    lines: list[str] = []
    wait_for(lambda: lines.append(proc.stderr.readline()) or "Ctrl-C stops both" in lines[-1], 90,
             "infra up to print its folder", interval=0)
    folder = Path(lines[-1].split("logs and data in ", 1)[1].split(";", 1)[0])
    assert folder.is_dir()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return folder, lines[-1] + err


def test_infra_up_removes_its_own_folder_at_ctrl_c(tmp_path):
    folder, said = _infra_up(tmp_path / "tmp")
    assert not folder.exists() and "removes it (--keep keeps it)" in said


def test_infra_up_keeps_it_with_keep_or_a_chosen_workdir(tmp_path):
    folder, said = _infra_up(tmp_path / "tmp", "--keep")
    assert (folder / "broker.log").is_file() and str(folder) in said
    chosen = tmp_path / "mine"
    folder, _ = _infra_up(tmp_path / "tmp2", "--workdir", str(chosen))
    assert folder == chosen and (chosen / "redis.log").is_file()
