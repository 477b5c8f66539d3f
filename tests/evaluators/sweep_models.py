"""A small seeded model, its data and eval callbacks for the evaluator tests.

The callbacks load their data inside the process that calls them (a Ray
worker too), as the README advises; the module travels to Ray workers by
value (`conftest.py` registers it with cloudpickle).
"""

import os
import signal

import numpy as np

_cache = {}


def data():
    if "data" not in _cache:
        from mct_logger.demo import load_digits_split

        _cache["data"] = load_digits_split()
    return _cache["data"]


def model():
    """The demo's digits CNN, untrained, with seeded weights (the same in every process)."""
    import keras

    from mct_logger.demo import build_digits_cnn

    keras.backend.clear_session()  # the same automatic layer names (re_lu, re_lu_1...) each time
    keras.utils.set_random_seed(0)
    return build_digits_cnn()


def calibrate(m):
    m.predict(data().x_train[:64], batch_size=32, verbose=0)


def score(m):
    """The negated mean squared error to the one-hot labels (x 1e3): continuous,
    so a score put under the wrong key would show."""
    import keras

    split = data()
    out = keras.ops.convert_to_numpy(m(split.x_test[:200], training=False))
    target = np.eye(10)[split.y_test[:200]]
    return -1e3 * float(np.mean((out - target) ** 2))


class KillAt:
    """`score`, but the process calling it is SIGKILLed at the `at`-th call
    counted across processes (a file of ticks), once (a marker file)."""

    def __init__(self, folder, at: int):
        self.ticks, self.marker, self.at = os.path.join(folder, "ticks"), \
            os.path.join(folder, "killed"), at

    def __call__(self, m):
        with open(self.ticks, "a") as f:
            f.write("x")
        with open(self.ticks) as f:
            count = len(f.read())
        if count >= self.at and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return score(m)


class Raising:
    """Raises a ValueError with a note at its `at`-th call."""

    def __init__(self, at: int = 1):
        self.at, self.calls = at, 0

    def __call__(self, m):
        self.calls += 1
        if self.calls >= self.at:
            error = ValueError("labels file missing")
            error.add_note("from the user's callback")
            raise error
        return score(m)


class Counting:
    def __init__(self):
        self.calls = 0

    def __call__(self, m):
        self.calls += 1
        return score(m)
