"""The default install stays light: no CUDA wheels, and the default path runs without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Distributions that only a CUDA build of torch (or torch itself) brings in.
HEAVY_PREFIXES = ("nvidia-", "cuda-", "triton", "torch", "gsplat", "diffusers")


def test_default_requirements_pull_no_cuda_packages(tmp_path):
    """What ``pip install .`` would install on an empty machine (resolved against the package
    index, installed packages ignored) holds no torch and no nvidia-*/CUDA wheel."""
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    names = sorted(item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"])
    assert "worldstream" in names and "numba" in names and "aiortc" in names, names
    heavy = [n for n in names if n.startswith(HEAVY_PREFIXES)]
    assert not heavy, f"the default install pulls {heavy}"


def test_torch_lives_in_extras_only():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not [r for r in project["dependencies"] if r.lower().startswith(("torch", "gsplat", "diffusers"))]
    assert any(r.startswith("torch") for r in project["optional-dependencies"]["gpu"])
    assert any(r.startswith("gsplat") for r in project["optional-dependencies"]["gpu"])


def test_setup_hides_no_failures():
    """scripts/setup never silences a failing install and falls back to the CUDA build."""
    text = (REPO / "scripts" / "setup").read_text()
    assert "2>/dev/null ||" not in text
    assert "pip install -q torch\n" not in text


def test_default_path_runs_without_torch(tmp_path):
    """The CLI generates and renders a procedural world with the CPU renderer (``--renderer
    auto`` included) while torch, gsplat and diffusers cannot be imported, and the server
    module imports too."""
    program = f"""
import sys
for name in ("torch", "gsplat", "diffusers", "triton"):
    sys.modules[name] = None  # 'import torch' now raises ImportError
import runtime.app
from runtime.cli import main
code = main(["--worlds", {str(tmp_path / 'worlds')!r}, "render", {str(tmp_path / 'walk.mp4')!r}, "--preset", "zoom-in",
             "--frames", "1", "--resolution", "64x36", "--keyframe-size", "64x36", "--renderer", "auto", "--quiet"])
assert code == 0, code
print("torch imported:", any(n.startswith("torch") and sys.modules[n] is not None for n in sys.modules))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch imported: False" in result.stdout
    assert (tmp_path / "walk.mp4").stat().st_size > 0
