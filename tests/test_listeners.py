"""A quiet, labelled console: progress bars say what they count (live on a
terminal, one plain line elsewhere), and the library's own compiled functions
never make TensorFlow warn about retracing."""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_progress_bars_are_labelled_and_repeated_runs_never_warn_about_retracing(tmp_path):
    # A fresh process: TensorFlow's retracing counters start empty, as for a user.
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        import keras, numpy as np
        import mct_logger

        x = np.random.default_rng(0).random((48, 8, 8, 1)).astype("float32")
        for i in range(6):  # e.g. a sweep over candidate models, each traced once
            inputs = keras.Input((8, 8, 1))
            h = keras.layers.Conv2D(4, 3)(inputs)
            model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(h)))
            mct_logger.keras_post_training_quantization(model, x)
        mct_logger.QuantAnalyzer(model, lambda m: m.predict(x, verbose=0),
                                 lambda m: 1.0).analyze(results_dir={str(tmp_path)!r})
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("/calibration batch") >= 6, done.stdout[-2000:]
    assert "/QuantAnalyzer evaluation" in done.stdout, done.stdout[-2000:]
    assert "retracing" not in done.stderr, done.stderr[-3000:]
    # stdout is a pipe here, as in CI or a log file: one plain line per bar, no
    # carriage returns or ANSI colour codes
    assert "\r" not in done.stdout and "\x1b[" not in done.stdout, repr(done.stdout[-500:])
