"""Reading the JSON files a user hands in (encodings files, QuantizationConfig files,
eval score files) strictly: a key that appears twice in one object is refused
naming it (json's default keeps the last one silently, so the file's meaning
depends on which tool reads it), and a file nested deeper than Python's
recursion limit is refused naming the file, never a bare RecursionError.

Example:

```python
with open(path, encoding="utf-8") as f:
    content = load_strict(f, f"Encodings file {path!r}")
```
"""

from __future__ import annotations

import json

__all__ = ["DuplicateKeyError", "load_strict"]


class DuplicateKeyError(ValueError):
    """A JSON object holds the same key twice."""


def _unique(pairs: list) -> dict:
    result = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKeyError(key)
        result[key] = value
    return result


def load_strict(file, source: str):
    """`json.load(file)` with duplicate keys and excessive nesting refused.

    Args:
        file: a text file object.
        source: the file as messages name it, e.g. "Encodings file 'e.json'".

    Raises:
        ValueError: a key appears twice in one object (the message names the key
            and `source`), or the nesting exceeds Python's recursion limit.
        json.JSONDecodeError, UnicodeDecodeError, OSError: as `json.load`.
    """
    try:
        return json.load(file, object_pairs_hook=_unique)
    except DuplicateKeyError as exc:
        key = exc.args[0]
        raise ValueError(f"{source} holds the key {key!r} twice in one object; a JSON reader "
                         "keeps only one of them, so the file is ambiguous. Remove one of the "
                         f"{key!r} entries.") from None
    except RecursionError:
        raise ValueError(f"{source} is nested too deeply to read (more levels than Python's "
                         "recursion limit); it is not a file mct-logger wrote.") from None
