"""Offline model choices fail fast: one line, no retries (HF_HUB_OFFLINE, or no route to the Hub)."""

import subprocess
import sys
import time

import pytest

from tipo.errors import ModelError
from tipo.registry import offline_reason, resolve

pytest.importorskip("huggingface_hub")


def test_hf_hub_offline_fails_at_once_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("TIPO_MODELS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    t0 = time.monotonic()
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE is set") as info:
        resolve("TIPO-200M")
    assert time.monotonic() - t0 < 2
    assert "\n" not in str(info.value) and str(tmp_path / "TIPO-200M-40Btok-F16.gguf") in str(info.value)


def test_an_unreachable_hub_fails_within_the_probe_timeout(monkeypatch, tmp_path):
    monkeypatch.setenv("TIPO_MODELS", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    assert "cannot be reached" in offline_reason(timeout=2)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    t0 = time.monotonic()
    with pytest.raises(ModelError, match="cannot be reached"):
        resolve("TIPO-200M")
    assert time.monotonic() - t0 < 5


def test_cli_prints_one_line_and_no_retries(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "TIPO_MODELS": str(tmp_path), "HF_HOME": str(tmp_path / "hf"),
           "HF_ENDPOINT": "http://127.0.0.1:9", "PYTHONPATH": ":".join(sys.path)}
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "tipo", "expand", "1girl", "--model", "TIPO-500M-ft"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1 and time.monotonic() - t0 < 30
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot be reached" in lines[0], out.stderr
