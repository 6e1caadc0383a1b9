"""Where a tutorial finds its inputs and puts its outputs, the same way as a script and as a notebook.

A notebook has no `__file__`, and its working directory is wherever the kernel started, so nothing here
depends on either: the repository root is the folder above the installed `omniref` package (an editable
install, i.e. a clone), the bundled media sit inside the package, and outputs go to one untracked folder.

    OMNIREF_COURSE_OUT   output folder (default: <repo>/tutorials/_output, ignored by git)
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import omniref

__all__ = ["repo_root", "data_file", "case", "output_dir", "in_notebook", "show"]

PACKAGE = Path(omniref.__file__).resolve().parent


def repo_root() -> Path:
    """The clone's root folder (the one holding `tests/golden/` and `tutorials/`)."""
    for root in (PACKAGE.parent, *Path.cwd().resolve().parents, Path.cwd().resolve()):
        if (root / "tests" / "golden").is_dir() and (root / "omniref").is_dir():
            return root
    raise FileNotFoundError("the course needs a clone of omniref (tests/golden/ next to the omniref package); "
                            f"none found above {PACKAGE} or {Path.cwd()}")


def data_file(name: str) -> Path:
    """A media file bundled with the package (`omniref/data/NAME`: speech.wav, photo.jpg)."""
    path = PACKAGE / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no bundled data file {name!r}")
    return path


def case(name: str):
    """A golden case that ships with the clone (`tests/golden/NAME`), described in docs/golden_format.md."""
    from omniref.golden import Case
    return Case(repo_root() / "tests" / "golden" / name)


def output_dir() -> Path:
    """The untracked folder tutorials write into ($OMNIREF_COURSE_OUT, else tutorials/_output/)."""
    env = os.environ.get("OMNIREF_COURSE_OUT")
    out = Path(env) if env else repo_root() / "tutorials" / "_output"
    out.mkdir(parents=True, exist_ok=True)
    return out


def in_notebook() -> bool:
    """True inside a Jupyter kernel (figures are shown inline there instead of saved)."""
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def show(fig, name: str) -> Path | None:
    """Show a figure inline in a notebook; save it as OUT/NAME.png (and close it) in a script.

    Returns the saved path, or None in a notebook.
    """
    import matplotlib.pyplot as plt
    if in_notebook():
        plt.show()
        return None
    path = output_dir() / f"{name}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
