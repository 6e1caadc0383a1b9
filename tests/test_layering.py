"""Imports point down the layer table, never up, never in a cycle (function-level imports count).

The table (issue 11, COMMON.md) is written once, here:

    data -> spec -> kernels -> model -> harness -> apps

A module may import its own layer or any layer below. Inside the model layer the order is explicit
(`MODEL_ORDER`): a model module may import only modules listed before it, so model files never form a cycle.
Every edge is read from the source with `ast`, including imports inside functions; relative imports are resolved.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "omniref"

LAYERS = ("data", "spec", "kernels", "model", "harness", "apps")
LAYER_OF = {
    "data": ("config", "weights", "checkpoint", "errors", "taps"),
    "spec": ("nn",),
    "kernels": ("_native", "backend", "_C"),
    "model": ("decoder", "audio", "vision", "thinker", "talker", "codec"),
    "harness": ("golden", "stages", "verify", "trace", "compare", "tiny"),
    "apps": ("pipeline", "generate", "demo", "bench", "summary", "cli", "__main__", ""),   # "" = omniref/__init__
}
# model modules, lowest first: each may import only those before it (a package's __init__ after its members)
MODEL_ORDER = (
    "decoder",
    "audio.wav", "audio.mel", "audio.encoder", "audio",
    "vision.preprocess", "vision.encoder", "vision",
    "codec.rvq", "codec.wavio", "codec.code2wav", "codec",
    "thinker.tokenizer", "thinker.positions", "thinker.sampling", "thinker.model", "thinker.prompt", "thinker",
    "talker.inputs", "talker.code_predictor", "talker.model", "talker",
)
EXCEPTIONS: dict[str, str] = {}


def module_names() -> dict[str, Path]:
    """'audio.encoder' -> path, '' for the package itself."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """omniref modules imported anywhere in one file (relative to the package, '' = omniref itself)."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if name else []
    pkg = here if is_pkg else here[:-1]
    found = set()

    def add(target: str):
        # an import of a name inside a module is an edge to that module
        while target not in known and "." in target:
            target = target.rsplit(".", 1)[0]
        if target in known or target == "_C":
            found.add(target)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "omniref" or a.name.startswith("omniref."):
                    add(a.name[len("omniref."):] if "." in a.name else "")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                mod = ".".join(base + (node.module.split(".") if node.module else []))
            elif node.module == "omniref" or (node.module or "").startswith("omniref."):
                mod = node.module[len("omniref."):] if "." in node.module else ""
            else:
                continue
            for a in node.names:   # `from pkg import submodule` is an edge to the submodule
                sub = f"{mod}.{a.name}" if mod else a.name
                add(sub if sub in known or sub == "_C" else mod)
    found.discard(name)
    return found


def layer(name: str) -> str:
    if name in EXCEPTIONS:
        return EXCEPTIONS[name]
    top = name.split(".")[0]
    for lay, tops in LAYER_OF.items():
        if top in tops:
            return lay
    raise AssertionError(f"omniref.{name} is in no layer of the table: add it to LAYER_OF")


def graph() -> dict[str, set[str]]:
    names = module_names()
    return {n: imports_of(n, p, set(names)) for n, p in sorted(names.items())}


def upward_edges(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, dsts in g.items():
        for dst in sorted(dsts):
            ls, ld = LAYERS.index(layer(src)), LAYERS.index(layer(dst))
            if ld > ls:
                bad.append(f"omniref.{src} ({layer(src)}) imports omniref.{dst} ({layer(dst)}): up the table")
            elif ld == ls == LAYERS.index("model") and src not in EXCEPTIONS:
                if src not in MODEL_ORDER or dst not in MODEL_ORDER:
                    bad.append(f"omniref.{src} -> omniref.{dst}: add both to MODEL_ORDER")
                elif MODEL_ORDER.index(dst) > MODEL_ORDER.index(src):
                    bad.append(f"omniref.{src} imports omniref.{dst}, which comes after it in MODEL_ORDER")
    return bad


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    for name in module_names():
        layer(name)


def test_imports_point_down_the_layer_table():
    bad = upward_edges(graph())
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "\n".join("cycle among: " + ", ".join(f"omniref.{m}" for m in c) for c in found)


@pytest.mark.parametrize("src, expect", [
    ("from .. import backend\n", {"backend"}),
    ("def f():\n    from ..codec.code2wav import causal_conv\n", {"codec.code2wav"}),
    ("import omniref.nn as nn\n", {"nn"}),
])
def test_the_parser_sees_relative_and_function_level_imports(tmp_path, src, expect):
    (tmp_path / "audio").mkdir()
    f = tmp_path / "audio" / "x.py"
    f.write_text(src)
    assert imports_of("audio.x", f, {"backend", "codec.code2wav", "nn", "audio.x", ""}) == expect


def test_a_planted_upward_edge_and_cycle_are_reported():
    g = {"nn": {"backend"}, "backend": {"nn"}, "decoder": set()}
    assert any("omniref.nn (spec) imports omniref.backend (kernels)" in e for e in upward_edges(g))
    assert cycles(g) == [["backend", "nn"]]


if __name__ == "__main__":   # print the graph, its upward edges and cycles, and lines per layer
    g = graph()
    for src, dsts in g.items():
        print(f"omniref.{src or '__init__'} [{layer(src)}] -> {', '.join(sorted(dsts)) or '-'}")
    print("\nupward edges:", *upward_edges(g) or ["none"], sep="\n  ")
    print("cycles:", *[" <-> ".join(c) for c in cycles(g)] or ["none"], sep="\n  ")
    lines = {}
    for n, p in module_names().items():
        lines[layer(n)] = lines.get(layer(n), 0) + len(p.read_text().splitlines())
    print("lines per layer:", ", ".join(f"{k} {lines.get(k, 0)}" for k in LAYERS))
