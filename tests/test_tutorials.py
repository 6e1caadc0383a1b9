"""Every tutorial runs top to bottom as a plain script AND as a notebook (jupytext -> nbclient, headless), passes
its own checks (they assert their numbers), shows its figures inline as a notebook, saves them as a script
into the output folder only, and leaves the repository's files exactly as they were (`git status`)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from omniref.course import render

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = render.chapters(ROOT / "tutorials")


def git_status() -> str:
    r = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip("not a git checkout: cannot compare the tracked files")
    return r.stdout


@pytest.fixture
def repo_unchanged():
    before = git_status()
    yield
    assert git_status() == before, "running the tutorial changed files of the repository"


def test_chapters_are_numbered_in_order():
    numbers = [int(p.name[:2]) for p in TUTORIALS]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 12


@pytest.mark.parametrize("script", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs_as_script(script, tmp_path, repo_unchanged):
    out = tmp_path / "out"
    env = dict(os.environ, MPLBACKEND="Agg", OMNIREF_COURSE_OUT=str(out))
    # run from an unrelated folder: nothing may depend on the working directory or on __file__
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"{script.name} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    saved = sorted(p.name for p in out.glob("*.png"))
    assert saved and all(name.startswith(script.name[:2] + "_") for name in saved), saved


@pytest.mark.parametrize("script", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs_as_notebook(script, tmp_path, monkeypatch, repo_unchanged):
    missing = [m for m in ("jupytext", "nbclient", "nbformat", "ipykernel") if importlib.util.find_spec(m) is None]
    assert not missing, f"the notebook runs need the [test] extra (pip install -e '.[test]'); missing: {missing}"
    out = tmp_path / "out"
    monkeypatch.setenv("OMNIREF_COURSE_OUT", str(out))       # the kernel inherits it
    monkeypatch.delenv("MPLBACKEND", raising=False)          # the kernel's own inline backend
    nb = render.execute(render.to_notebook(script), cwd=tmp_path)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert images, f"{script.name}: no inline figure in the executed notebook"
    assert not list(out.glob("*.png")), "a notebook shows its figures inline instead of writing files"
