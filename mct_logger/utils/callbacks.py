"""User callbacks and the scores they return: the one place every entry point checks them.

A callback is a plain callable `callback(model)`, a `(func, args)` pair called as
`func(model, args)`, or an object with `.func` and `.args` (AIMET's CallbackFunc).
An eval callback returns one number (higher is better); a non-finite one is
refused for the reference (float) model and kept as missing elsewhere
(`ScoreCheck`).

Example:

```python
evaluate = as_callback((my_eval, (x_val, y_val)), "eval_callback")
score = eval_score(evaluate(model), "eval_callback")
```
"""

from __future__ import annotations

import inspect
import logging
import math
from typing import Any, Callable

import numpy as np

logger = logging.getLogger("mct_logger")


def as_callback(callback, what: str) -> Callable[[Any], Any]:
    """`(model) -> result` from a plain callable, a `(func, args)` pair (called as
    `func(model, args)`, AIMET's convention) or an object with `.func` and `.args`
    (AIMET's CallbackFunc). Refuses anything else, a generator object and a
    generator function (its call runs none of its body), with a TypeError naming
    `what`: every entry point checks its callbacks here, before any evaluation."""
    expected = (f"{what} must be a callable taking the model, or a (func, args) pair called "
                "as func(model, args)")
    if inspect.isgenerator(callback) or inspect.isasyncgen(callback):
        raise TypeError(f"{expected}; got a generator object, which cannot take the model: pass "
                        "a function that runs it (e.g. lambda model: model.predict(x)).")
    if isinstance(callback, tuple) and len(callback) == 2 and callable(callback[0]):
        func, args = callback
        _refuse_generator_function(func, expected)
        return lambda model: func(model, args)
    if callable(callback):  # before the CallbackFunc test: functools.partial has .func/.args
        _refuse_generator_function(callback, expected)
        return callback
    if hasattr(callback, "func") and hasattr(callback, "args") and callable(callback.func):
        _refuse_generator_function(callback.func, expected)
        return lambda model: callback.func(model, callback.args)
    raise TypeError(f"{expected}; got {type(callback).__name__}.")


def _refuse_generator_function(func, expected: str) -> None:
    """TypeError if calling `func` would only create a generator (it has `yield`)."""
    for f in (func, getattr(func, "__call__", None)):
        if inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f):
            name = getattr(func, "__name__", type(func).__name__)
            raise TypeError(f"{expected}; got generator function {name!r}, whose call only "
                            "creates a generator and runs none of its body: write it without "
                            "yield.")


def eval_score(value, what: str) -> float:
    """The one number an eval callback returned; TypeError naming `what` otherwise."""
    try:
        score = float(np.asarray(value).reshape(()))
    except (TypeError, ValueError):
        raise TypeError(
            f"{what} must return one number (e.g. accuracy, higher is better); it returned "
            f"{type(value).__name__} {value!r:.80}."
        ) from None
    return score


def comparable(score) -> float:
    """`score` for comparisons: a missing (None) or non-finite one is -inf, so it never
    meets a target, never beats another score and is never chosen (an `inf` from a
    broken callback must not pass every check)."""
    return float(score) if score is not None and math.isfinite(score) else -math.inf


class ScoreCheck:
    """The eval callback's scores, checked for NaN/Inf, the one rule of every entry
    point taking an `eval_callback` (QuantAnalyzer.analyze and .recommend,
    search_mixed_precision, equalize_model, compress_model): the reference score
    (the float model's, every other one is compared with it) must be finite, else
    ValueError before any other evaluation; a later non-finite score is kept (null
    in the JSON files, no TensorBoard point) with one warning, for the first,
    naming the callback and the configuration, and compares as missing
    (`comparable`). compress_model, whose every score picks a ratio, refuses any
    non-finite score with the same message (`strict=True`)."""

    def __init__(self, what: str = "eval_callback", strict: bool = False):
        self.what = what
        self.strict = strict
        self.warned = False

    def __call__(self, value, configuration: str, reference: bool = False) -> float:
        """`value` as a float.

        Raises:
            TypeError: `value` is not one number.
            ValueError: the `reference` score (with `strict`, any score) is NaN
                or infinite (a reference is scored before any other evaluation).
        """
        score = eval_score(value, self.what)
        if math.isfinite(score):
            return score
        if reference or self.strict:
            compared = ", the score every other one is compared with" if reference else ""
            raise ValueError(
                f"{self.what} returned {score} for {configuration}{compared}; it must return a "
                "finite number (e.g. accuracy, or a negated loss). Check "
                f"{self.what}(model) on the float model first."
            )
        if not self.warned:
            self.warned = True
            logger.warning(
                "%s returned %s for %s; the score is kept as missing (null in the results, no "
                "TensorBoard point). Further non-finite scores are not reported again.",
                self.what, score, configuration)
        return score
