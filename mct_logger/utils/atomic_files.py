"""Files written atomically: a reader, an interrupt or a failure never sees half a file.

Example:

```python
write_atomically("scores.json", lambda f: json.dump(scores, f))
```
"""

from __future__ import annotations

import contextlib
import os


def write_atomically(path: str, write, binary: bool = False) -> None:
    """Calls `write(f)` on `path + ".tmp"` (text, UTF-8; bytes when `binary`) and
    then moves it to `path`:
    an interrupt or a failure never leaves half a file, and the `.tmp` file is
    removed when it did not become `path`. A symbolic link at the `.tmp` path is
    never followed.

    Raises:
        OSError: the file cannot be written (disk full, a folder in the way...),
            with `path` as its filename whatever the call that failed.
    """
    temporary = f"{path}.tmp"
    created = False
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                             | getattr(os, "O_NOFOLLOW", 0), 0o666)
        created = True
        with (open(descriptor, "wb") if binary else
              open(descriptor, "w", encoding="utf-8")) as f:
            write(f)
        os.replace(temporary, path)
    except BaseException as exc:
        if created:
            with contextlib.suppress(OSError):
                os.remove(temporary)
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename != path:
            raise type(exc)(exc.errno, exc.strerror or str(exc), path) from exc
        raise
