"""One batch (or whole data) checked against the model inputs and cast to their dtype.

`mct_logger.data.sources` turns every form of representative data into arrays, one
per model input; `check_batch` then refuses what the model cannot run on
(a dtype that is no number, a shape that is not the input's, NaN or Inf, or
values beyond the input's float range once cast) with an error naming the
batch, the input and the fix, and casts each array to its input's float dtype.

Example:

```python
arrays, n = check_batch([x], input_specs(graph), "representative_data batch 0")
```
"""

from __future__ import annotations

import numpy as np


class RepresentativeDataError(ValueError):
    """The representative data cannot be used; the message says why and what to do."""


def check_batch(arrays: list[np.ndarray], specs: list, where: str,
                limit: int | None = None):
    """Checks one batch (or whole data) against the inputs and casts each array to
    its input's float dtype; returns `(arrays, number of samples)`.

    Finiteness is checked after the cast, so float64 values beyond float32's
    range (or float32 beyond a float16 input's) are refused here, not turned
    into Inf inside the model. With `limit`, only the first `limit` samples are
    cast and checked for values (the ones that will be read); the returned
    arrays then hold those samples only, and the count is of all samples given.
    """
    sizes = {len(a) if a.ndim else 0 for a in arrays}
    cast = []
    for a, spec in zip(arrays, specs):
        label = f"{where}, input {spec.name!r}"
        if spec.dtype == "string" and a.dtype.kind in "USO":
            pass  # text for a string input (StringLookup, TextVectorization)
        elif a.dtype.kind not in "iub" and not is_float(a.dtype):
            raise RepresentativeDataError(
                f"{label} has dtype {a.dtype}; the model expects {spec.dtype}. "
                "Convert it to numbers (e.g. array.astype('float32'))."
            )
        if a.ndim != len(spec.shape) or any(
            want is not None and got != want for got, want in zip(a.shape[1:], spec.shape[1:])
        ):
            raise RepresentativeDataError(
                f"{label} has shape {a.shape} but the model input is "
                f"{shape_text(spec.shape)}. Yield arrays shaped "
                f"{shape_text(spec.shape)} with the batch first."
            )
        if limit is not None and a.ndim:
            a = a[:limit]
        if "float" in spec.dtype and a.dtype != spec.dtype:
            with np.errstate(over="ignore"):
                converted = a.astype(spec.dtype)
        else:
            converted = a
        if is_float(converted.dtype) and not np.all(np.isfinite(converted)):
            bad = int(np.size(converted) - np.count_nonzero(np.isfinite(converted)))
            was_finite = not is_float(a.dtype) or bool(np.all(np.isfinite(a)))
            if was_finite:
                raise RepresentativeDataError(
                    f"{label} holds {bad} value(s) beyond the range of {spec.dtype}, the "
                    f"model input's dtype (largest magnitude {np.max(np.abs(a)):.3g}); they "
                    "would be Inf in the model. Rescale or clip the data to what the model "
                    "was trained on."
                )
            raise RepresentativeDataError(
                f"{label} holds {bad} NaN or Inf value(s). Clean or drop those samples; "
                "calibration ranges would be meaningless."
            )
        cast.append(converted)
    if len(sizes) != 1:
        raise RepresentativeDataError(
            f"{where} has inputs with different batch sizes {sorted(sizes)}; every input "
            "of a batch needs the same number of samples."
        )
    return cast, sizes.pop()


def shape_text(shape) -> str:
    return "(" + ", ".join("batch" if i == 0 else ("any" if d is None else str(d))
                           for i, d in enumerate(shape)) + ")"


def is_float(dtype: np.dtype) -> bool:
    """NumPy's floats and ml_dtypes' (bfloat16, float8_*: NumPy kind "V"), which a
    bfloat16 `tf.data` pipeline yields and Keras' `predict` takes."""
    return dtype.kind == "f" or (dtype.type.__module__ == "ml_dtypes" and "float" in dtype.name)
