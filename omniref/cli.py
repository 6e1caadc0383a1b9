"""The `omniref` command line: one subcommand per job, each implemented by a `main(argv)` in its module.

    omniref demo       the whole chain on the bundled tiny model, a real speech clip and a photo
    omniref verify     compare every stage of a golden case with the reference (max abs / rel error)
    omniref summary    parameters (total vs active) and thinker FLOPs of a config (default: 30B-A3B)
    omniref generate   text (and speech) from a checkpoint, audio, image and a prompt
    omniref bench      C++ vs NumPy kernels and whole models, as ratios measured side by side
    omniref trace      save the taps (named activations) of a golden case, or of a generate run (--checkpoint)
    omniref compare    compare two traces layer by layer (first divergence)
    omniref fullwidth  write a random checkpoint at the published widths (Hub layout, bf16, sharded)

Bad input ends in one line on stderr naming the file / field / value and a non-zero exit code per kind:
2 usage or other bad input, 3 checkpoint, 4 config, 5 media (WAV / image / video), 6 ids, options or
output paths; 1 an unexpected error (add --debug anywhere, or set OMNIREF_DEBUG=1, for its traceback).
"""
from __future__ import annotations

import importlib
import os
import sys

COMMANDS = {
    "demo": ("omniref.demo", "main"),
    "verify": ("omniref.verify", "main"),
    "summary": ("omniref.summary", "main"),
    "generate": ("omniref.generate", "main"),
    "bench": ("omniref.bench", "main"),
    "trace": ("omniref.generate", "main_trace"),
    "compare": ("omniref.compare", "main"),
    "fullwidth": ("omniref.fullwidth", "main"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        if argv and argv[0] not in ("-h", "--help"):
            print(f"omniref: error: unknown command '{argv[0]}' (known: {', '.join(COMMANDS)})", file=sys.stderr)
            return 2
        return 0
    debug = "--debug" in argv or os.environ.get("OMNIREF_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    module, func = COMMANDS[argv[0]]
    try:
        if os.environ.get("OMNIREF_BACKEND", "").strip():
            from . import backend
            backend.active()                    # a bad OMNIREF_BACKEND is refused before any work
        return int(getattr(importlib.import_module(module), func)(argv[1:]) or 0)
    except KeyboardInterrupt:
        print(f"omniref {argv[0]}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:                      # the one error boundary of every subcommand
        if debug:
            raise
        return report(argv[0], e)


def report(command: str, e: BaseException) -> int:
    """One line on stderr for an exception that escaped a subcommand -> its exit code.

    An OmnirefError already names the file / field / value; anything else is a bug or an environment
    problem the code did not foresee, reported with a hint to rerun with --debug.
    """
    from .errors import OmnirefError
    if isinstance(e, OmnirefError):
        print(f"omniref {command}: {e}", file=sys.stderr)
        return e.exit_code
    if isinstance(e, MemoryError):
        print(f"omniref {command}: out of memory (the input needs more memory than this machine has)",
              file=sys.stderr)
        return 1
    detail = " ".join(str(e).split())[:500]
    print(f"omniref {command}: unexpected {type(e).__name__}: {detail} (rerun with --debug for the traceback)",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
