"""Full garbage collections that skip the objects a run started with.

CPython's cyclic garbage collector walks every tracked object of its oldest
generation on a full (generation 2) collection, so one costs time proportional
to the live heap: with TensorFlow and Keras imported and a model built that is
millions of objects, about 0.25 s per collection on a 2-core machine. A PTQ run
allocates enough (layer clones, traced functions, event protos) to trigger one
to three of them, a sixth of the run on a small model, and they almost never
find garbage among those objects.

`frozen_heap()` moves every object alive when the run starts into CPython's
permanent generation (`gc.freeze`) and back into the oldest one when it ends
(`gc.unfreeze`), so collections during the run walk only what the run
allocated. Nothing is kept alive that would otherwise be freed by reference
counting; a cycle among pre-existing objects that becomes garbage during the
run is collected after it. Runs nest and may overlap across threads: the heap
is frozen while at least one run is inside.

Example:

```python
@frozen_heap()          # or: with frozen_heap(): ...
def keras_post_training_quantization(model, representative_data, config=None):
    ...
```
"""

from __future__ import annotations

import contextlib
import gc
import threading

__all__ = ["frozen_heap"]

_lock = threading.Lock()
_depth = 0  # runs inside frozen_heap(), over all threads


@contextlib.contextmanager
def frozen_heap():
    """Freezes the objects alive now out of garbage collection until the outermost
    `frozen_heap()` of the process exits (see the module docstring). Also a
    decorator: each call of the decorated function is one run."""
    global _depth
    with _lock:
        _depth += 1
        if _depth == 1:
            gc.freeze()
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                gc.unfreeze()
