"""`python -m omniref.course`: list the exercises, check an answer, render the course to HTML.

    python -m omniref.course list                   every exercise: id, kind, function, task
    python -m omniref.course check 08.2 answers.py  check the function answers.py defines (exit 1 unless PASS)
    python -m omniref.course html OUT_DIR [--force] execute every chapter and write static HTML pages
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m omniref.course", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list every exercise")
    c = sub.add_parser("check", help="check an answer file against an exercise")
    c.add_argument("exercise", help="exercise id, e.g. 08.2")
    c.add_argument("answer", nargs="?", default="answers.py", help="a .py file defining the function (answers.py)")
    h = sub.add_parser("html", help="render the whole course to static HTML")
    h.add_argument("out_dir")
    h.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")
    args = ap.parse_args(argv)

    if args.cmd == "list":
        from omniref.course.exercises import EXERCISES
        for ex in EXERCISES.values():
            print(f"{ex.id}  [{ex.kind}]  {ex.name}: {ex.task}")
        return 0
    if args.cmd == "check":
        from omniref.course.exercises import EXERCISES, run_check
        if args.exercise not in EXERCISES:
            print(f"error: no exercise {args.exercise!r} (python -m omniref.course list shows them)", file=sys.stderr)
            return 2
        try:
            return 0 if run_check(args.exercise, args.answer).passed else 1
        except (FileNotFoundError, AttributeError, SyntaxError, ImportError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    from omniref.course.render import render_html
    try:
        render_html(args.out_dir, force=args.force)
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        print(f"error: rendering needs jupytext, nbclient, ipykernel and nbconvert "
              f"(pip install -e '.[course]'): {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
