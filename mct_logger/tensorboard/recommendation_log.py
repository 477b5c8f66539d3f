"""TensorBoard logging of a mixed-precision search or a QuantAnalyzer recommendation.

The engine (`mixed_precision_search`, `recommend`) returns its tables and
tells the recommendation listeners (`mct_logger.listeners`); `set_log_folder`
registers `log_recommendation` as one, which makes them visible:

- a PTQ run of the baseline configuration, in the run folder `<model>_baseline`;
- a PTQ run of the recommended one, in `<model>_recommended`;
- the tables ("mixed_precision_search", "recommendation" payloads of the
  quant_analyzer plugin) in the TensorBoard run `<model>_recommended/mixed_precision`,

so the QuantAnalyzer tab, with both runs ticked, compares them layer by layer
and shows the tables beside the comparison.

Example:

```python
set_log_folder("logs")
config, result = search_mixed_precision(model, x, weights_memory=budget)
# tensorboard --logdir logs: tick digits_cnn_baseline and digits_cnn_recommended
```
"""

from __future__ import annotations

import logging

from mct_logger.tensorboard.run_log import LogGuard, RunLog, runs_named

logger = logging.getLogger("mct_logger")

TABLES_RUN = "mixed_precision"
RETURNED = "The search's results are still returned"


def log_recommendation(model, representative_data, baseline_config, recommended_config,
                       tables: dict) -> dict:
    """Logs the baseline and recommended PTQ runs and the tables (see the module docs).

    Returns `{"baseline": folder, "recommended": folder}` (None for a run that
    was not logged). Never raises for a log that cannot be written: that is
    one warning, as for every mct-logger log.
    """
    from mct_logger.ptq.pipeline import keras_post_training_quantization
    from mct_logger.tb_plugin import metadata
    from mct_logger.tb_plugin.summary import payload_summary

    folders = {}
    for role, config in (("baseline", baseline_config), ("recommended", recommended_config)):
        with runs_named(f"_{role}") as created:
            keras_post_training_quantization(model, representative_data, config)
        folders[role] = created[-1] if created else None
    folder = folders["recommended"]
    if folder is None:
        return folders
    run_log = RunLog(folder, guard=LogGuard(folder, RETURNED))
    try:
        writer = run_log.writer(TABLES_RUN)
        for kind, table in tables.items():
            writer.add_summary(payload_summary(metadata.QUANT_ANALYZER, kind, kind, table))
    finally:
        run_log.close()
    logger.info("Baseline and recommended runs logged: %s, %s (tick both in the "
                "QuantAnalyzer tab to compare them)", folders["baseline"], folder)
    return folders
