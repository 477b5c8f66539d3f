"""TensorBoard logging of a mixed-precision search or a QuantAnalyzer recommendation.

The engine (`mixed_precision_search`, `recommend`) returns its tables and
tells the recommendation listeners (`mct_logger.listeners`); `set_log_folder`
registers `log_recommendation` as one, which makes them visible:

- a PTQ run of the baseline configuration, in the run folder
  `<model>_<search|recommend>_baseline`;
- a PTQ run of the recommended one, in `<model>_<search|recommend>_recommended`;
  none when it is the baseline's configuration (nothing to change: "the
  baseline already meets the target"), so no run is logged twice;
- the tables ("mixed_precision_search", "recommendation" payloads of the
  quant_analyzer plugin) in the similarity-analysis TensorBoard run of the
  recommended folder (of the baseline's when nothing changed; in
  `<folder>/mixed_precision` when that run was not logged).

Each of these PTQ runs writes only the TensorBoard runs a comparison needs
(`COMPARISON_STAGES`: the quantized graph and the layer table), labelled
"search: baseline"... (`tensorboard.run_labels`): a search and a
recommendation then add 4 TensorBoard runs each, not 16.

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
import os

from mct_logger.run_log import LogGuard, RunLog, runs_named

logger = logging.getLogger("mct_logger")

TABLES_RUN = "mixed_precision"
# The PTQ stages a baseline or recommended run writes: its graph (the bits per
# node) and its layer table (the QuantAnalyzer tab's comparison).
COMPARISON_STAGES = ("quantized_model", "similarity_analysis")
ORIGINS = {"mixed_precision_search": "search", "recommendation": "recommend"}
RETURNED = "The search's results are still returned"


def log_recommendation(model, representative_data, baseline_config, recommended_config,
                       tables: dict) -> dict:
    """Logs the baseline and recommended PTQ runs and the tables (see the module docs).

    Returns `{"baseline": folder, "recommended": folder}` (None for a run that
    was not logged). Never raises for a log that cannot be written: that is
    one warning, as for every mct-logger log.
    """
    from mct_logger.ptq import keras_post_training_quantization
    from mct_logger.tb_plugin import metadata
    from mct_logger.tb_plugin.summary import payload_summary

    origin = next((ORIGINS[k] for k in tables if k in ORIGINS), "search")
    unchanged = recommended_config == baseline_config
    folders = {"baseline": None, "recommended": None}
    roles = (("baseline", baseline_config),) if unchanged else \
        (("baseline", baseline_config), ("recommended", recommended_config))
    for role, config in roles:
        with runs_named(f"_{origin}_{role}", origin=f"{origin}: {role}",
                        stages=COMPARISON_STAGES) as created:
            keras_post_training_quantization(model, representative_data, config)
        folders[role] = created[-1] if created else None
    folder = folders["baseline" if unchanged else "recommended"]
    if unchanged:
        logger.info("%s: the baseline already meets the target; nothing to change, so only "
                    "the baseline run is logged.", origin)
    if folder is None:
        return folders
    run_log = RunLog(folder, guard=LogGuard(folder, RETURNED))
    try:
        # in the layer table's run when there is one: no TensorBoard run of its own
        similarity = sorted(n for n in os.listdir(folder) if n.endswith("_similarity_analysis"))
        writer = run_log.writer(similarity[-1] if similarity else TABLES_RUN)
        for kind, table in tables.items():
            writer.add_summary(payload_summary(metadata.QUANT_ANALYZER, kind, kind, table))
    finally:
        run_log.close()
    if not unchanged:
        logger.info("Baseline and recommended runs logged: %s, %s (tick both in the "
                    "QuantAnalyzer tab to compare them)", folders["baseline"], folder)
    return folders
