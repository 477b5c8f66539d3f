"""Checks of the public entry points' arguments, run before any work: a wrong type or
value gives an error naming the argument, what it takes and what it got.

Each check returns the value as the entry point uses it (a path as `str`,
names as a list), so a value that passed is never re-read differently later:

    check_path("encodings_file", 3)   -> TypeError: an int is not a path (Python
                                         would read it as an open file descriptor)
    check_names("layers_to_ignore", "conv1")  -> ["conv1"]

Example:

```python
results_dir = check_path("results_dir", results_dir)
ignored = check_names("layers_to_ignore", layers_to_ignore)
check_bool("return_result", return_result)
```
"""

from __future__ import annotations

import numbers
import os

__all__ = ["check_bool", "check_callables", "check_choice", "check_int", "check_model",
           "check_names", "check_path", "described"]


def described(value) -> str:
    """`value`'s type and a short repr, for messages."""
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def check_bool(name: str, value, optional: bool = False):
    """`value` if it is True or False (or None with `optional`); TypeError otherwise."""
    if value is None and optional:
        return None
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False{' or None' if optional else ''}, got "
                        f"{described(value)}.")
    return value


def check_int(name: str, value, minimum: int = 1, optional: bool = False):
    """`value` as an int >= `minimum` (NumPy integers too, never a bool)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}"
                        f"{' or None' if optional else ''}, got {described(value)}.")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_choice(name: str, value, choices) -> object:
    """`value` if it is one of `choices` (compared by equality, hashable or not)."""
    if not any(value is c or (type(value) is type(c) and value == c) for c in choices):
        raise ValueError(f"{name}={value!r} is not supported; use one of {tuple(choices)}.")
    return value


def check_path(name: str, value, optional: bool = False):
    """`value` as a `str` path: a `str` or an `os.PathLike` giving one.

    Raises:
        TypeError: anything else, named; an int is refused (never taken as an
            open file descriptor), bytes too (pass a str).
        ValueError: an empty path or one holding a NUL character.
    """
    if value is None and optional:
        return None
    hint = ""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        hint = " (an integer is not a path: it is never read as an open file descriptor)"
    path = os.fspath(value) if isinstance(value, os.PathLike) else value
    if not isinstance(path, str):
        raise TypeError(f"{name} must be a file path (str or os.PathLike)"
                        f"{' or None' if optional else ''}, got {described(value)}{hint}.")
    if not path or "\0" in path:
        raise ValueError(f"{name} must be a non-empty path without NUL characters, got "
                         f"{path!r}.")
    return path


def check_names(name: str, value, optional: bool = True, layers: bool = False):
    """`value` as a list of names (str): one name, or a list/tuple/set of names; with
    `layers`, Keras layers stand for their names. None gives None (with `optional`).

    Raises:
        TypeError: anything else (an int, a dict, an entry that is not a name), named.
    """
    if value is None and optional:
        return None

    def as_name(item):
        if isinstance(item, str):
            return item
        if layers and isinstance(getattr(item, "name", None), str) and hasattr(item, "weights"):
            return item.name
        return None

    what = "a layer name or a list of layer names" + (" (or Keras layers)" if layers else "")
    if as_name(value) is not None:
        return [as_name(value)]
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise TypeError(f"{name} must be {what}, got {described(value)}.")
    bad = [v for v in value if as_name(v) is None]
    if bad:
        raise TypeError(f"{name} must be {what}; it holds {described(bad[0])}.")
    return [as_name(v) for v in value]


def check_callables(name: str, value):
    """`value` as a list of callables (None: an empty list)."""
    if value is None:
        return []
    if callable(value) or not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list of callables, got {described(value)}.")
    bad = [v for v in value if not callable(v)]
    if bad:
        raise TypeError(f"{name} must be a list of callables; it holds {described(bad[0])}.")
    return list(value)


def check_model(value, name: str = "model"):
    """`value` if it is a keras.Model; TypeError naming `name` otherwise."""
    import keras

    if not isinstance(value, keras.Model):
        raise TypeError(f"{name} must be a keras.Model (Functional or Sequential), got "
                        f"{described(value)}.")
    return value
