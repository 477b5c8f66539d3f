"""Representative data: every form users pass, turned into checked NumPy batches.

Accepted forms: a zero-argument callable returning an iterable of batches
(MCT's convention), a generator or other iterable of batches, a
`tf.data.Dataset`, or NumPy arrays (one per model input, batched here). A batch
is one array per model input (a bare array for a single-input model, a list in
input order, or a dict by input name); a labelled `(x, y)` or
`(x, y, sample_weight)` batch is accepted and its labels ignored.

Everything is read and checked before any quantization work starts, so a bad
batch fails fast with an error that names it and says how to fix it.

Example:

```python
batches = load_batches(x_train[:512], input_specs(graph), batch_size=32)
```
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import numpy as np


class RepresentativeDataError(ValueError):
    """The representative data cannot be used; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple  # with None for the batch and any dynamic dimension
    dtype: str


def input_specs(graph) -> list[InputSpec]:
    return [
        InputSpec(name, tuple(graph.nodes[name].output_shapes[0]),
                  str(graph.nodes[name].output_dtypes[0]))
        for name in graph.input_names
    ]


def load_batches(data: Any, specs: list[InputSpec], batch_size: int = 32) -> list[list[np.ndarray]]:
    """Reads all of `data` into batches: a list of `[array per model input]`."""
    if data is None:
        raise RepresentativeDataError(
            "representative_data is None. Pass a callable returning batches, a "
            "generator, a tf.data.Dataset or a NumPy array of model inputs."
        )
    arrays = _as_full_arrays(data, specs)
    if arrays is not None:
        n = _check_batch(arrays, specs, "representative_data")
        batches = [[a[i:i + batch_size] for a in arrays] for i in range(0, n, batch_size)]
    else:
        batches = [
            _to_inputs(element, specs, f"representative_data batch {i}")
            for i, element in enumerate(_iterate(data))
        ]
        for i, batch in enumerate(batches):
            _check_batch(batch, specs, f"representative_data batch {i}")
    if not batches or sum(len(b[0]) for b in batches) == 0:
        raise RepresentativeDataError(
            "representative_data is empty: it yielded no samples. Pass a few hundred "
            "typical model inputs (e.g. 500 training images)."
        )
    return [
        [a.astype(s.dtype) if a.dtype != s.dtype and "float" in s.dtype else a
         for a, s in zip(batch, specs)]
        for batch in batches
    ]


def num_samples(batches) -> int:
    return sum(len(b[0]) for b in batches)


def _as_full_arrays(data, specs) -> list[np.ndarray] | None:
    """Whole-dataset arrays (to be batched here), or None for an iterable of batches."""
    if _is_array(data):
        if len(specs) != 1:
            raise RepresentativeDataError(
                f"representative_data is one array but the model has {len(specs)} "
                f"inputs ({', '.join(s.name for s in specs)}); pass a list with one "
                "array per input."
            )
        return [_numpy(data)]
    if isinstance(data, dict) and all(_is_array(v) for v in data.values()):
        return _to_inputs(data, specs, "representative_data")
    if (
        isinstance(data, (list, tuple))
        and len(specs) > 1
        and len(data) == len(specs)
        and all(_is_array(a) and _numpy(a).ndim == len(s.shape) for a, s in zip(data, specs))
    ):
        return [_numpy(a) for a in data]
    return None


def _iterate(data):
    if callable(data) and not _is_dataset(data) and not inspect.isgenerator(data):
        try:
            signature = inspect.signature(data)
            required = [
                p for p in signature.parameters.values()
                if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
        except (TypeError, ValueError):
            required = []
        if required:
            raise RepresentativeDataError(
                "representative_data is a callable that takes arguments "
                f"({', '.join(p.name for p in required)}); pass a zero-argument "
                "callable that returns an iterable of batches."
            )
        data = data()
    if _is_dataset(data):
        return data.as_numpy_iterator()
    try:
        return iter(data)
    except TypeError:
        raise RepresentativeDataError(
            f"representative_data of type {type(data).__name__} is not iterable. Pass a "
            "callable returning batches, a generator, a tf.data.Dataset or a NumPy array."
        ) from None


def _to_inputs(element, specs, where) -> list[np.ndarray]:
    n = len(specs)
    if isinstance(element, dict):
        missing = [s.name for s in specs if s.name not in element]
        if missing:
            raise RepresentativeDataError(
                f"{where} is a dict without the model input(s) {missing}; its keys are "
                f"{sorted(map(str, element))}. Key each array by its model input name."
            )
        return [_numpy(element[s.name]) for s in specs]
    if _is_array(element):
        if n != 1:
            raise RepresentativeDataError(
                f"{where} is one array but the model has {n} inputs; yield a list with "
                "one array per input."
            )
        return [_numpy(element)]
    if isinstance(element, (list, tuple)):
        if len(element) == n and all(
            _is_array(a) and _numpy(a).ndim == len(s.shape) for a, s in zip(element, specs)
        ):
            return [_numpy(a) for a in element]
        if len(element) in (2, 3):  # (x, y) or (x, y, sample_weight): labels ignored
            return _to_inputs(element[0], specs, where)
        if len(element) == n:
            return [_numpy(a) for a in element]
    raise RepresentativeDataError(
        f"{where} is a {type(element).__name__} that is not a batch of model inputs. "
        f"Yield {'an array' if n == 1 else f'a list of {n} arrays'} shaped like "
        f"{', '.join(_shape_text(s.shape) for s in specs)} (or an (x, y) pair)."
    )


def _check_batch(arrays: list[np.ndarray], specs: list[InputSpec], where: str) -> int:
    sizes = {len(a) if a.ndim else 0 for a in arrays}
    for a, spec in zip(arrays, specs):
        label = f"{where}, input {spec.name!r}"
        if spec.dtype == "string" and a.dtype.kind in "USO":
            pass  # text for a string input (StringLookup, TextVectorization)
        elif a.dtype.kind not in "fiub":
            raise RepresentativeDataError(
                f"{label} has dtype {a.dtype}; the model expects {spec.dtype}. "
                "Convert it to numbers (e.g. array.astype('float32'))."
            )
        if a.ndim != len(spec.shape) or any(
            want is not None and got != want for got, want in zip(a.shape[1:], spec.shape[1:])
        ):
            raise RepresentativeDataError(
                f"{label} has shape {a.shape} but the model input is "
                f"{_shape_text(spec.shape)}. Yield arrays shaped "
                f"{_shape_text(spec.shape)} with the batch first."
            )
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
            raise RepresentativeDataError(
                f"{label} holds {bad} NaN or Inf value(s). Clean or drop those samples; "
                "calibration ranges would be meaningless."
            )
    if len(sizes) != 1:
        raise RepresentativeDataError(
            f"{where} has inputs with different batch sizes {sorted(sizes)}; every input "
            "of a batch needs the same number of samples."
        )
    return sizes.pop()


def _shape_text(shape) -> str:
    return "(" + ", ".join("batch" if i == 0 else ("any" if d is None else str(d))
                           for i, d in enumerate(shape)) + ")"


def _is_dataset(x) -> bool:
    return type(x).__module__.startswith("tensorflow") and hasattr(x, "as_numpy_iterator")


def _is_array(x) -> bool:
    return isinstance(x, np.ndarray) or (
        hasattr(x, "shape") and hasattr(x, "dtype") and hasattr(x, "__array__")
    )


def _numpy(x) -> np.ndarray:
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = x.numpy()
    return np.asarray(x)
