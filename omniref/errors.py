"""The errors omniref raises on bad input: each a ValueError, each message naming the file, field or key and the
value that was expected. The CLI prints one line for these, never a traceback.

    OmnirefError (ValueError)          exit code 2 from the CLI, unless a subclass says otherwise
    ├── CheckpointError                3   a weights file or index is corrupt, or disagrees with the config
    ├── ConfigError                    4   a config.json field has the wrong type, range or an unsupported value
    ├── MediaError                     5   a WAV / image / video cannot be read, or is outside the limits
    └── InputError                     6   ids, codes, counts, options or output paths are out of range

Each error keeps what it names (`file`, `field`, `value`) as attributes, so a test or a caller can check the
culprit without parsing the message. `regular_file` is the one gate every path passes before it is opened:
a FIFO, a directory or a device in place of a file would block `open` forever or read without end.
`output_file` is the gate every output passes before any work starts: nothing is overwritten without
`--force`, and nothing is ever written onto the command's own inputs or into a golden case.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

__all__ = ["OmnirefError", "CheckpointError", "ConfigError", "MediaError", "InputError", "regular_file",
           "output_file", "env_number", "parse_json"]


class OmnirefError(ValueError):
    """Base class: bad input that the message names."""

    exit_code = 2

    def __init__(self, message: str, *, file=None, field: str | None = None, value=None):
        super().__init__(message)
        self.file = None if file is None else os.fspath(file)
        self.field, self.value = field, value


class CheckpointError(OmnirefError):
    """A checkpoint lacks a tensor the config requires, or holds one of the wrong shape (names the key)."""

    exit_code = 3


class ConfigError(OmnirefError):
    """A config field is missing, of the wrong type, or asks for a variant omniref does not implement."""

    exit_code = 4


class MediaError(OmnirefError):
    """An audio, image or video input cannot be read or has the wrong shape."""

    exit_code = 5


class InputError(OmnirefError):
    """Another input (ids, codes, prompt) is out of range or inconsistent."""

    exit_code = 6


def regular_file(path, what: str, error: type[OmnirefError] = InputError, max_bytes: int | None = None) -> Path:
    """Check that `path` is an existing regular file (at most `max_bytes`) WITHOUT opening it -> Path.

    `os.stat` never blocks, while `open` on a FIFO waits for a writer forever; a directory or a character
    device (/dev/zero) would read without end. `what` names the role ("config", "WAV file") in the message.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: no such {what}", file=path) from None
    except OSError as e:
        raise error(f"{path}: cannot read the {what} ({e.strerror})", file=path) from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise error(f"{path}: the {what} is {kind}, expected a regular file", file=path)
    if max_bytes is not None and st.st_size > max_bytes:
        raise error(f"{path}: the {what} is {st.st_size} bytes, more than the limit of {max_bytes}", file=path)
    return path


def output_file(path, what: str, *, force: bool = False, inputs=(), option: str = "--force") -> Path:
    """Check, before any work starts, that `path` may be written -> Path.

    Refused (InputError naming the path): a missing parent folder, a directory in the way, an existing file
    unless `force`, and, even with `force`, one of `inputs` (the paths this command reads) or anything inside
    a golden case (a folder holding golden.npz), which would destroy the reference it is checked against.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{path}: cannot write the {what}: folder {parent} does not exist", file=path)
    if (parent / "golden.npz").exists() or path.name == "golden.npz":
        raise InputError(f"{path}: refusing to write the {what} into the golden case {parent}", file=path)
    target = path.resolve()
    for src in inputs:
        if src is not None and (Path(src).resolve() == target or _same_file(src, path)):
            raise InputError(f"{path}: the {what} would overwrite one of this command's inputs", file=path)
    if path.is_dir():
        raise InputError(f"{path}: the {what} path is a directory", file=path)
    if os.path.lexists(path) and not force:
        raise InputError(f"{path}: the {what} exists; pass {option} to overwrite it", file=path)
    return path


def _same_file(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def env_number(name: str, default: float, kind=float, minimum: float | None = None):
    """A number from environment variable `name` (default when unset) -> kind; anything else is an InputError."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise InputError(f"{name}={raw!r}: expected a {kind.__name__}", field=name, value=raw) from None
    if value != value or (minimum is not None and value < minimum) or value in (float("inf"), float("-inf")):
        raise InputError(f"{name}={raw!r}: expected a finite {kind.__name__} >= {minimum}", field=name, value=raw)
    return value


class _DuplicateKey(Exception):
    pass


def _reject_duplicates(pairs: list) -> dict:
    """json object_pairs_hook: a key given twice is an error (json.loads would silently keep the last one)."""
    out = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _depth_ok(x, limit: int) -> bool:
    """True when JSON value x nests no deeper than `limit` containers (iterative: no recursion to exhaust)."""
    stack = [(x, 1)]
    while stack:
        v, level = stack.pop()
        if isinstance(v, (dict, list)):
            if level > limit:
                return False
            stack.extend((c, level + 1) for c in (v.values() if isinstance(v, dict) else v))
    return True


def parse_json(raw: bytes, path, what: str, error: type[OmnirefError], max_depth: int):
    """UTF-8 JSON bytes -> value; non-UTF-8, invalid JSON, a duplicate key or nesting deeper than `max_depth`
    raise `error` naming `path` (json.loads alone would keep the last of two equal keys without a word)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: the {what} is not UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r})",
                    file=path) from None
    try:
        value = json.loads(text, object_pairs_hook=_reject_duplicates)
    except _DuplicateKey as e:
        raise error(f"{path}: the {what} names '{e.args[0]}' twice", file=path, field=e.args[0]) from None
    except json.JSONDecodeError as e:
        raise error(f"{path}: the {what} is not valid JSON ({e})", file=path) from None
    except RecursionError:
        raise error(f"{path}: the {what} nests deeper than {max_depth} levels", file=path) from None
    if not _depth_ok(value, max_depth):
        raise error(f"{path}: the {what} nests deeper than {max_depth} levels", file=path)
    return value
