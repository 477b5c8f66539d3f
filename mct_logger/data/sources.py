"""Representative data: every form users pass, turned into checked NumPy batches.

Accepted forms: a zero-argument callable returning an iterable of batches
(MCT's convention), a generator or other iterable of batches, a
`tf.data.Dataset`, or NumPy arrays (one per model input, batched here). A batch
is one array per model input (a bare array for a single-input model, a list in
input order, or a dict by input name); a labelled `(x, y)` or
`(x, y, sample_weight)` batch is accepted and its labels ignored, and so is a
`(x_train, y_train)` tuple of whole arrays, as `model.fit` takes it.

Reading stops after `max_samples` samples (PTQ passes
`QuantizationConfig.num_calibration_samples`, 1000 by default, the 500-1000
that AIMET and MCT recommend), so an endless generator or a `.repeat()`ed
`tf.data.Dataset` ends; one log line says how many samples were used.

Everything is read and checked before any quantization work starts, so a bad
batch fails fast with an error that names it and says how to fix it. PTQ then
reads the data again batch by batch for each pass (`mct_logger.data.batches`);
`load_batches` holds it in memory, for the few batches a diagnosis keeps.

Example:

```python
batches = load_batches(x_train, input_specs(graph), batch_size=32, max_samples=1000)
```
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import logging
from typing import Any

import numpy as np
from keras import tree

from mct_logger.data import dataset_length
from mct_logger.data.batch_check import RepresentativeDataError, check_batch, shape_text

logger = logging.getLogger("mct_logger")

# Where users set `max_samples`, named when data that never ends is refused.
CAP_SETTING = "QuantizationConfig.num_calibration_samples"
# The argument named in errors; entry points with another name for it pass theirs.
NAME = "representative_data"


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


def load_batches(
    data: Any, specs: list[InputSpec], batch_size: int = 32, max_samples: int | None = None,
    cap_setting: str = CAP_SETTING, max_batches: int | None = None, name: str = NAME,
) -> list[list[np.ndarray]]:
    """Reads `data` into batches held in memory: a list of `[array per model input]`.

    PTQ streams instead (`mct_logger.data.batches.CalibrationBatches`); this is for
    the few batches a diagnosis keeps (e.g. QuantAnalyzer's MSE data).

    Args:
        data: any accepted form (see the module docstring).
        specs: the model inputs, in order (`input_specs(graph)`).
        batch_size: how whole arrays are cut into batches.
        max_samples: stop reading after this many samples (the last batch is
            cut to fit), so an endless generator or a `.repeat()`ed dataset
            ends; None reads everything and refuses a dataset that never ends
            (`mct_logger.data.dataset_length`).
        cap_setting: where the caller's user sets `max_samples`, named in
            that refusal.
        max_batches: stop reading after this many batches (a dataset that
            never ends is then read, not refused).
        name: the caller's argument, named in errors (e.g. "dummy_input").

    Returns:
        The batches, each array cast to its input's float dtype.

    Raises:
        RepresentativeDataError: a form, shape, dtype or value (NaN/Inf after
            the cast to the input's dtype) that cannot be used; the message
            names the batch, the input and the fix.
    """
    check_arguments(data, max_samples, name)
    status: dict = {}
    batches = list(checked_batches(data, specs, batch_size, max_samples, status,
                                   max_batches is None, cap_setting, max_batches, name))
    samples = num_samples(batches)
    check_not_empty(samples, name)
    log_loaded(samples, len(batches), max_samples if status["capped"] else None)
    return batches


def check_arguments(data, max_samples, name: str = NAME) -> None:
    """Refuses `data=None` and a `max_samples` that is not a positive integer or None."""
    if data is None:
        raise RepresentativeDataError(
            f"{name} is None. Pass a callable returning batches, a "
            "generator, a tf.data.Dataset or a NumPy array of model inputs."
        )
    if max_samples is not None and (not isinstance(max_samples, int) or max_samples < 1):
        raise ValueError(f"max_samples must be a positive integer or None, got {max_samples!r}.")


def check_not_empty(samples: int, name: str = NAME) -> None:
    if samples == 0:
        raise RepresentativeDataError(
            f"{name} is empty: it yielded no samples. Pass a few hundred "
            "typical model inputs (e.g. 500 training images)."
        )


def log_loaded(samples: int, batches: int, cap: int | None, how: str = "") -> None:
    """The one log line saying how much representative data is used (and why no more)."""
    logger.info(
        "Representative data: %d samples in %d batches%s%s", samples, batches,
        f" (stopped reading at the cap QuantizationConfig.num_calibration_samples={cap})"
        if cap is not None else "", how,
    )


def whole_arrays(data, specs: list[InputSpec], max_samples: int | None, name: str = NAME):
    """`(arrays, capped)` when `data` is whole arrays (checked, cast, cut to
    `max_samples`), or None when it is a source of batches."""
    arrays = _as_full_arrays(data, specs, name)
    if arrays is None:
        return None
    arrays, n = check_batch(arrays, specs, name, limit=max_samples)
    return arrays, max_samples is not None and n > max_samples  # arrays hold the first max_samples


def slices(arrays: list[np.ndarray], batch_size: int):
    """Batches of `batch_size` samples (views) of whole arrays."""
    for i in range(0, len(arrays[0]), batch_size):
        yield [a[i:i + batch_size] for a in arrays]


def is_one_shot(data) -> bool:
    """Whether `data` can be read only once (a generator or other iterator)."""
    if _is_dataset(data) or _is_array(data):
        return False
    if inspect.isgenerator(data) or inspect.isasyncgen(data):
        return True
    if callable(data):
        return False  # called again for each pass
    return hasattr(data, "__next__")


def checked_batches(data, specs: list[InputSpec], batch_size: int = 32,
                    max_samples: int | None = None, status: dict | None = None,
                    check_ends: bool = True, cap_setting: str = CAP_SETTING,
                    max_batches: int | None = None, name: str = NAME):
    """Yields the checked batches of one pass over `data` (a callable is called,
    a dataset or iterable iterated afresh), at most `max_batches`;
    `status["capped"]` tells, at the end, whether reading stopped at
    `max_samples`; `check_ends=False` (a later pass) skips refusing, or warning
    of, an uncapped dataset that may not end."""
    status = {} if status is None else status
    status["capped"] = False
    limit = max_samples if max_batches is None else min(
        max_batches * batch_size, max_samples or max_batches * batch_size)
    whole = whole_arrays(data, specs, limit, name)
    if whole is not None:
        status["capped"] = whole[1] and limit == max_samples
        yield from slices(whole[0], batch_size)
        return
    total = 0
    elements = _noted(_iterate(data, max_samples, check_ends, cap_setting, name), name)
    for i, element in enumerate(itertools.islice(elements, max_batches)):
        if max_samples is not None and total >= max_samples:
            status["capped"] = True
            return
        where = f"{name} batch {i}"
        batch, n = check_batch(_to_inputs(element, specs, where), specs, where)
        if max_samples is not None and total + n > max_samples:
            n, status["capped"] = max_samples - total, True
            batch = [a[:n] for a in batch]
        total += n
        if n:
            yield batch


def first_batches(data, specs: list, num_batches: int, name: str = NAME) -> list:
    """The first `num_batches` batches of `data` (anything `load_batches` takes;
    whole arrays are cut into batches of 32), read no further than needed."""
    return load_batches(data, specs, max_batches=num_batches, name=name)


def num_samples(batches) -> int:
    """Samples in a list of batches or a `CalibrationBatches`."""
    counted = getattr(batches, "num_samples", None)
    return counted if counted is not None else sum(len(b[0]) for b in batches)


def _as_full_arrays(data, specs, name: str = NAME) -> list[np.ndarray] | None:
    """Whole-dataset arrays (to be batched here), or None for an iterable of batches.

    Besides one array per input (a bare array, a list/tuple in input order, a
    dict by input name), this takes `(x, y)` and `(x, y, sample_weight)`
    tuples of whole arrays as `model.fit` takes them: x as above, and every
    array of y and the weights as long as x; y and the weights are ignored.
    """
    if _is_array(data):
        if len(specs) != 1:
            raise RepresentativeDataError(
                f"{name} is one array but the model has {len(specs)} "
                f"inputs ({', '.join(s.name for s in specs)}); pass a list with one "
                "array per input."
            )
        return [_numpy(data)]
    if isinstance(data, dict) and all(_is_array(v) for v in data.values()):
        return _to_inputs(data, specs, name)
    if isinstance(data, (list, tuple)) and len(specs) > 1 and data and all(
            _is_array(a) for a in data):
        # One array per input: a model with several inputs takes no bare array
        # as a batch, so this is whole data, checked input by input (in the
        # wrong order, the first mismatching input is named with the shape it got).
        if len(data) != len(specs):
            raise _count_error(name, data, specs)
        arrays = [_numpy(a) for a in data]
        _check_order(arrays, specs, name)
        return arrays
    labelled = _labelled_inputs(data, specs, name)
    if labelled is not None:
        logger.info("%s is an (x, y%s) pair of whole arrays: calibrating on x, labels "
                    "ignored", name, ", sample_weight" * (len(data) == 3))
        return labelled
    return None


def _labelled_inputs(data, specs, name: str = NAME) -> list[np.ndarray] | None:
    """x of an `(x, y)` / `(x, y, sample_weight)` tuple of whole arrays, else None.

    x as `model.fit` takes it (a bare array, one array per input, a dict by input
    name), y and the weights as long as x or None. Not a list of batches: in a list
    `[x, y]`, y is bare arrays but no batch; in a tuple, x or y is no list/dict batch.

    Raises:
        RepresentativeDataError: x fits the inputs and y (no batch) is not as long.
    """
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
        return None
    x, rest = data[0], [a for a in data[1:] if a is not None]
    if isinstance(data, list):
        if not all(_is_array(a) for a in rest) or any(_fits_inputs(a, specs) for a in rest):
            return None
    elif not _is_array(x) and any(not _is_array(a) and _fits_inputs(a, specs) for a in rest):
        return None  # a tuple of two batches, each a list or dict
    inputs = _whole_x(x, specs, name)
    labels = tree.flatten(rest)
    if inputs is None or not all(_is_array(a) and np.ndim(a) for a in labels):
        return None
    n = len(inputs[0]) if inputs[0].ndim else 0
    if all(len(a) == n for a in labels):
        return inputs
    if all(_fits(a, s) for a, s in zip(inputs, specs)) and not any(
            _fits_inputs(a, specs) for a in rest):
        _refuse_labels(data, n, name)
    return None


def _whole_x(x, specs, name: str = NAME) -> list[np.ndarray] | None:
    """The arrays x of an `(x, y)` tuple holds, one per input, or None if it holds none."""
    if _is_array(x):
        return [_numpy(x)] if len(specs) == 1 and np.ndim(x) == len(specs[0].shape) else None
    if isinstance(x, dict) and all(_is_array(v) for v in x.values()):
        return _to_inputs(x, specs, f"{name}[0] (x of an (x, y) tuple)")
    if isinstance(x, (list, tuple)) and len(x) == len(specs) and all(_is_array(a) for a in x):
        return [_numpy(a) for a in x]
    return None


def _fits_inputs(element, specs) -> bool:
    """Whether `element` is a batch of the model inputs by shape (a bare array for
    a one-input model, a list/tuple in input order, a dict by input name)."""
    arrays = ([element.get(s.name) for s in specs] if isinstance(element, dict)
              else [element] if _is_array(element)
              else list(element) if isinstance(element, (list, tuple)) else [])
    return len(arrays) == len(specs) and all(
        _is_array(a) and _fits(_numpy(a), s) for a, s in zip(arrays, specs))


def _refuse_labels(data, n: int, name: str = NAME) -> None:
    """Refuses an `(x, y[, sample_weight])` tuple whose labels are not as long as x."""
    got = [f"{label} has {len(a)}" for label, part in zip(["y", "sample_weight"], data[1:])
           for a in tree.flatten(part) if a is not None and len(a) != n]
    raise RepresentativeDataError(
        f"{name} looks like (x, y{', sample_weight' * (len(data) == 3)}) "
        f"as model.fit takes them, but x has {n} samples and {', '.join(got)}: labels "
        "that do not match x (model.fit refuses them too). Calibration needs no labels: "
        "pass x alone, or labels as long as x."
    )


def _count_error(where: str, arrays, specs) -> RepresentativeDataError:
    """The error for a list of bare arrays that is not one array per model input."""
    k = len(arrays)
    return RepresentativeDataError(
        f"{where} is a {type(arrays).__name__} of {k} array{'s' * (k != 1)} but the model "
        f"has {len(specs)} inputs ({', '.join(repr(s.name) for s in specs)}). Pass one array "
        "per input in that order (or a dict keyed by input name); labels go in an (x, y) "
        "pair, x holding the inputs."
    )


def _fits(a: np.ndarray, spec: InputSpec) -> bool:
    """Whether `a` has the input's rank and fixed dimensions (batch first)."""
    return a.ndim == len(spec.shape) and all(
        want is None or got == want for got, want in zip(a.shape[1:], spec.shape[1:]))


def _check_order(arrays, specs, where: str) -> None:
    """Refuses whole arrays that fit the inputs only in another order, saying so."""
    if all(_fits(a, s) for a, s in zip(arrays, specs)):
        return
    first = next(i for i, (a, s) in enumerate(zip(arrays, specs)) if not _fits(a, s))
    spec, got = specs[first], arrays[first].shape
    matches = [s.name for s in specs if _fits(arrays[first], s)]
    hint = (f" It fits input {matches[0]!r}: the arrays seem to be in another order than "
            f"the model inputs [{', '.join(repr(s.name) for s in specs)}]."
            if matches else "")
    raise RepresentativeDataError(
        f"{where}, input {spec.name!r} expects {shape_text(spec.shape)} but "
        f"got an array of shape {got}.{hint} Pass one array per input in the model's "
        "input order, or a dict keyed by input name."
    )


def _iterate(data, max_samples=None, check_ends=True, cap_setting: str = CAP_SETTING,
             name: str = NAME):
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
                f"{name} is a callable that takes arguments "
                f"({', '.join(p.name for p in required)}); pass a zero-argument "
                "callable that returns an iterable of batches."
            )
        try:
            data = data()
        except Exception as exc:
            exc.add_note(f"(raised while calling {name})")
            raise
    if _is_dataset(data):
        if max_samples is None and check_ends:
            refusal = dataset_length.refusal(data, cap_setting)
            if refusal:
                raise RepresentativeDataError(refusal)
        return data.as_numpy_iterator()
    try:
        return iter(data)
    except TypeError:
        raise RepresentativeDataError(
            f"{name} of type {type(data).__name__} is not iterable. Pass a "
            "callable returning batches, a generator, a tf.data.Dataset or a NumPy array."
        ) from None


def _noted(elements, name: str = NAME):
    """The elements of an iterator; an error raised while reading one (the user's
    generator, `__getitem__` or pipeline) keeps its type and gets a note naming
    `name` and the batch."""
    for i in itertools.count():
        try:
            element = next(elements)
        except StopIteration:
            return
        except Exception as exc:
            exc.add_note(f"(raised while reading {name} batch {i})")
            raise
        yield element


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
        if n > 1 and len(element) == n and all(_is_array(a) for a in element):
            # one bare array per input (a model with several inputs takes no bare
            # array as x): in input order, or named as mismatching
            arrays = [_numpy(a) for a in element]
            _check_order(arrays, specs, where)
            return arrays
        if n > 1 and element and all(_is_array(a) for a in element):
            raise _count_error(where, element, specs)  # no input's batch is a bare array
        if len(element) in (2, 3):  # (x, y) or (x, y, sample_weight): labels ignored
            return _to_inputs(element[0], specs, where)
        if len(element) == n:
            return [_numpy(a) for a in element]
    raise RepresentativeDataError(
        f"{where} is a {type(element).__name__} that is not a batch of model inputs. "
        f"Yield {'an array' if n == 1 else f'a list of {n} arrays'} shaped like "
        f"{', '.join(shape_text(s.shape) for s in specs)} (or an (x, y) pair)."
    )


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
