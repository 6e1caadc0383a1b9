"""The `omniref` command line: one subcommand per job, each implemented by a `main(argv)` in its module.

    omniref demo       the whole chain on the bundled tiny model, a real speech clip and a photo
    omniref verify     compare every stage of a golden case with the reference (max abs / rel error)
    omniref summary    parameters (total vs active) and thinker FLOPs of a config (default: 30B-A3B)
    omniref generate   text (and speech) from a checkpoint, audio, image and a prompt
    omniref bench      C++ vs NumPy kernels and whole models, as ratios measured side by side
    omniref trace      save the taps (named activations) of a golden case, or of a generate run (--checkpoint)
    omniref compare    compare two traces layer by layer (first divergence)
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "demo": ("omniref.demo", "main"),
    "verify": ("omniref.verify", "main"),
    "summary": ("omniref.summary", "main"),
    "generate": ("omniref.generate", "main"),
    "bench": ("omniref.bench", "main"),
    "trace": ("omniref.generate", "main_trace"),
    "compare": ("omniref.compare", "main"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown command '{argv[0]}'", file=sys.stderr)
            return 2
        return 0
    module, func = COMMANDS[argv[0]]
    return int(getattr(importlib.import_module(module), func)(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
