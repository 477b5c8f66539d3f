"""Session-scoped fixtures shared by the test packages (helpers are in tests/helpers.py)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

from tests.helpers import write_hostile_payloads  # noqa: E402


@pytest.fixture(scope="session")
def trained_digits():
    """`(data, model)`: the digits split and the demo CNN trained 20 epochs, seeded
    (0.99 held-out accuracy; trained once per session, never modified by a test)."""
    import keras

    from mct_logger.demo import load_digits_split, train_digits_cnn

    keras.utils.set_random_seed(0)
    data = load_digits_split()
    return data, train_digits_cnn(data, epochs=20)


@pytest.fixture(scope="session")
def dashboard_logs(tmp_path_factory, trained_digits):
    """A log folder as a user makes it: a PTQ run with CLE, a default PTQ run and a
    QuantAnalyzer run of one trained digits CNN, plus a run of hostile payloads.

    Returns a dict: `logdir`, `model`, `info_cle`, `info_default`, `analysis`,
    `results_dir`, and the run names `ptq_cle`, `ptq_default`, `analyzer`, `broken`.
    """
    import keras

    import mct_logger
    from mct_logger.demo import accuracy

    logdir = tmp_path_factory.mktemp("dashboards")
    keras.utils.set_random_seed(0)
    data, model = trained_digits  # trained (0.99 test accuracy), not at chance
    results_dir = str(tmp_path_factory.mktemp("qa_results"))
    try:
        mct_logger.set_log_folder(logdir, run_name="ptq_cle")
        _, info_cle = mct_logger.keras_post_training_quantization(
            model, data.x_train[:128], mct_logger.QuantizationConfig(cross_layer_equalization=True))
        mct_logger.set_log_folder(logdir, run_name="ptq_default")
        _, info_default = mct_logger.keras_post_training_quantization(model, data.x_train[:128])
        mct_logger.set_log_folder(logdir, run_name="analyzer")
        analyzer = mct_logger.QuantAnalyzer(
            model,
            forward_pass_callback=lambda m: m.predict(data.x_train[:128], batch_size=64, verbose=0),
            eval_callback=lambda m: accuracy(m, data.x_test[:200], data.y_test[:200]),
        )
        analyzer.enable_per_layer_mse_loss(data.x_train[:64], num_batches=2)
        analysis = analyzer.analyze(results_dir=results_dir)
    finally:
        mct_logger.set_log_folder(None)
    write_hostile_payloads(str(logdir / "broken"))
    return {
        "logdir": logdir, "model": model, "info_cle": info_cle, "info_default": info_default,
        "analysis": analysis, "results_dir": results_dir, "ptq_cle": "ptq_cle",
        "ptq_default": "ptq_default", "analyzer": "analyzer", "broken": "broken",
    }


