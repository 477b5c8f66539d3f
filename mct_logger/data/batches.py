"""Streamed calibration data: checked batches read from the source on each pass.

PTQ reads its representative data several times (statistics collection, bias
correction's waves, the similarity analysis), one batch at a time, so peak
memory holds one batch, not the data set. How each pass reads depends on the
form (see `mct_logger.data.sources` for the forms and checks):

- a zero-argument callable is called again for each pass, a `tf.data.Dataset`
  or a re-iterable container (a list of batches) iterated again, and whole
  arrays sliced again (they are in memory already);
- a one-shot generator or iterator cannot be read twice: its batches are
  cached on the first pass, in memory up to `memory_limit` bytes (256 MiB by
  default), past that in a temporary folder of `.npy` files that goes away
  with the `CalibrationBatches` object; a log line says which.

The first pass checks every batch (shape, dtype, NaN/Inf) and counts the
samples before any quantization work, so bad data still fails fast; later
passes read the same number of batches (a source that yields fewer on a later
pass is refused, naming the pass).

Example:

```python
batches = CalibrationBatches(lambda: dataset_batches(), input_specs(graph),
                             batch_size=32, max_samples=1000)
len(batches), batches.num_samples          # known after the checking pass
for batch in batches:                      # one pass: [array per model input]
    ...
batches.first                              # the first batch, kept (no re-read)
```
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import weakref

import numpy as np

from mct_logger.data import sources as data_lib
from mct_logger.data.sources import InputSpec, RepresentativeDataError

logger = logging.getLogger("mct_logger")

MEMORY_LIMIT = 256 * 2**20  # bytes of a one-shot generator's batches cached in memory


class CalibrationBatches:
    """Re-iterable checked batches of representative data (one pass per `iter`).

    Args:
        data: any form `mct_logger.data.sources` accepts.
        specs: the model inputs, in order (`data.input_specs(graph)`).
        batch_size: how whole arrays are cut into batches.
        max_samples: stop reading each pass after this many samples.
        memory_limit: bytes of a one-shot generator's batches kept in memory;
            beyond it they go to a temporary folder.

    Attributes:
        num_samples, num_batches (also `len()`): what one pass yields.
        first: the first batch (a list with one array per model input).
        passes: the passes started so far, the checking pass included.
        cached: None, "memory" or "disk" (a one-shot generator's cache).

    Raises:
        RepresentativeDataError: on construction, for data that cannot be used
            (the message names the batch, the input and the fix); during a
            later pass, if the source yields fewer batches than on the first.
    """

    def __init__(self, data, specs: list[InputSpec], batch_size: int = 32,
                 max_samples: int | None = None, memory_limit: int = MEMORY_LIMIT):
        data_lib.check_arguments(data, max_samples)
        self.passes = 0
        self.cached = None
        self._cache: _Cache | None = None
        whole = data_lib.whole_arrays(data, specs, max_samples)
        how = ""
        if whole is not None:
            arrays, capped = whole
            self._open = lambda: data_lib.slices(arrays, batch_size)
        elif data_lib.is_one_shot(data):
            self._cache = _Cache(memory_limit)
            self._open = self._cache.__iter__
        else:
            self._open = lambda: data_lib.checked_batches(  # the first pass checked the ends
                data, specs, batch_size, max_samples, check_ends=False)
        status: dict = {}
        source = (data_lib.checked_batches(data, specs, batch_size, max_samples, status)
                  if whole is None else self._open())
        self.passes = 1
        self.num_batches, self.num_samples, self.first = 0, 0, None
        for batch in source:  # the checking pass: every batch checked, none kept
            if self.first is None:
                self.first = batch
            if self._cache is not None:
                self._cache.add(batch)
            self.num_batches += 1
            self.num_samples += len(batch[0])
        data_lib.check_not_empty(self.num_samples)
        if self._cache is not None:
            self.cached = self._cache.where
            how = (f"; a one-shot generator, cached {self._cache.megabytes:.1f} MB "
                   + ("in memory" if self.cached == "memory"
                      else f"in the temporary folder {self._cache.folder}")
                   + " so each calibration pass can read it again")
        elif whole is None:
            how = "; read batch by batch on each calibration pass"
        capped = whole[1] if whole is not None else status.get("capped", False)
        data_lib.log_loaded(self.num_samples, self.num_batches,
                            max_samples if capped else None, how)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        self.passes += 1
        count = 0
        for batch in self._open():
            if count == self.num_batches:
                return  # a source that grew since the checking pass: the same batches
            count += 1
            yield batch
        if count < self.num_batches:
            raise RepresentativeDataError(
                f"representative_data yielded {count} batch(es) on calibration pass "
                f"{self.passes}, but {self.num_batches} on the first. PTQ reads the data once "
                "per pass: pass a callable that returns a fresh iterator on each call (or a "
                "tf.data.Dataset, a list of batches, arrays), not one that returns the same "
                "generator again."
            )


class _Cache:
    """A one-shot generator's checked batches: in memory, past `limit` bytes on disk."""

    def __init__(self, limit: int):
        self.limit = limit
        self.batches: list = []  # in memory: the batches; on disk: file lists
        self.bytes = 0
        self.folder = None
        self._cleanup = None

    @property
    def where(self) -> str:
        return "memory" if self.folder is None else "disk"

    @property
    def megabytes(self) -> float:
        return self.bytes / 1e6

    def add(self, batch: list[np.ndarray]) -> None:
        self.bytes += sum(a.nbytes for a in batch)
        if self.folder is None and self.bytes > self.limit:
            self.folder = tempfile.mkdtemp(prefix="mct_logger_calibration_")
            self._cleanup = weakref.finalize(self, shutil.rmtree, self.folder, True)
            in_memory, self.batches = self.batches, []
            for kept in in_memory:
                self._write(kept)
        if self.folder is None:
            self.batches.append(batch)
        else:
            self._write(batch)

    def _write(self, batch) -> None:
        paths = []
        for k, array in enumerate(batch):
            path = os.path.join(self.folder, f"batch{len(self.batches)}_input{k}.npy")
            np.save(path, np.ascontiguousarray(array))
            paths.append(path)
        self.batches.append(paths)

    def __iter__(self):
        if self.folder is None:
            yield from self.batches
            return
        for paths in self.batches:
            yield [np.load(p) for p in paths]
