"""tutorials/NN_topic.py (`# %%` scripts) -> notebooks -> executed -> static HTML with inline figures.

jupytext reads the percent-format script as a notebook, nbclient executes it in a fresh kernel (figures
appear inline there: `omniref.course.show`), and nbconvert's HTMLExporter writes one self-contained page per
chapter (figures embedded as data URIs), plus an index page that follows tutorials/README.md's order.
These three packages are the `[course]` extra (also in `[test]`), imported only when rendering.
"""
from __future__ import annotations

import html
import shutil
from pathlib import Path

from omniref.course.notebook import repo_root

__all__ = ["chapters", "to_notebook", "execute", "render_html"]


def chapters(folder: Path | None = None) -> list[Path]:
    """The chapter scripts in course order: tutorials/NN_*.py."""
    folder = Path(folder) if folder is not None else repo_root() / "tutorials"
    return sorted(folder.glob("[0-9][0-9]_*.py"))


def to_notebook(script: Path):
    """A `# %%` script -> an nbformat notebook (not yet executed)."""
    import jupytext
    nb = jupytext.read(script)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def execute(nb, cwd: Path, timeout: int = 300):
    """Run every cell top to bottom in a fresh headless kernel of this Python, started in `cwd`; returns it.

    A failing cell raises nbclient's CellExecutionError naming the cell and the traceback.
    """
    import json
    import sys
    import tempfile

    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    with tempfile.TemporaryDirectory() as kernels:
        # a kernel of THIS interpreter (the one omniref is installed in), whatever kernels the user has
        spec = Path(kernels) / "omniref-course"
        spec.mkdir()
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}", "--log-level=ERROR"],
            "display_name": "omniref course", "language": "python"}))
        km = KernelManager(kernel_name="omniref-course", kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernels]))
        NotebookClient(nb, km=km, timeout=timeout, resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def _title(nb, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def render_html(out_dir, force: bool = False, log=print) -> list[Path]:
    """Execute every chapter and write OUT_DIR/NN_topic.html + OUT_DIR/index.html; returns the pages.

    Refuses to write into an existing OUT_DIR unless `force` (then the folder is replaced).
    """
    from nbconvert import HTMLExporter
    out = Path(out_dir)
    if out.exists():
        if not force:
            raise FileExistsError(f"{out}: already exists; pass --force to replace it")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.mkdir(parents=True)
    exporter = HTMLExporter()
    pages, rows = [], []
    for script in chapters():
        log(f"executing {script.name} ...")
        nb = execute(to_notebook(script), cwd=out)
        body, _ = exporter.from_notebook_node(nb)
        page = out / f"{script.stem}.html"
        page.write_text(body, encoding="utf-8")
        pages.append(page)
        rows.append(f'<li><a href="{page.name}">{html.escape(_title(nb, script.stem))}</a></li>')
    syllabus = repo_root() / "tutorials" / "README.md"
    intro = (f"<pre>{html.escape(syllabus.read_text(encoding='utf-8'))}</pre>" if syllabus.is_file() else "")
    index = out / "index.html"
    index.write_text("<!doctype html><meta charset='utf-8'><title>omniref course</title>"
                     "<h1>omniref: Qwen3-Omni from scratch, the course</h1><ol>" + "".join(rows) + "</ol>"
                     "<h2>Syllabus</h2>" + intro, encoding="utf-8")
    log(f"wrote {len(pages)} chapters and {index}")
    return [index] + pages
