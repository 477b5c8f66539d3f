"""The baseline and recommended PTQ runs of a mixed-precision search or a recommendation.

A search (`search_mixed_precision`) or a recommendation (`QuantAnalyzer.recommend`)
returns a config; to be seen, it needs PTQ runs to compare: one of the baseline
config, run `<model>_baseline`, and one of the recommended config, run
`<model>_recommended`, whose listeners also get the tables (`listeners.TABLES`).
The engines make these runs themselves, only when a per-run listener (such as
`set_log_folder`'s TensorBoard one) would see them; a listener never runs PTQ.
When the recommendation is the baseline itself, the one baseline run carries the
tables: nothing is logged twice.

Example:

```python
if listeners.has_run_listeners(listeners.PTQ):
    quantize_baseline_and_recommended(model, batches, config, chosen, {"mixed_precision_search": t})
```
"""

from __future__ import annotations

import logging

from mct_logger import listeners
from mct_logger.ptq.pipeline import quantize

__all__ = ["quantize_baseline_and_recommended"]

logger = logging.getLogger("mct_logger")


def quantize_baseline_and_recommended(model, representative_data, baseline_config,
                                      recommended_config, tables: dict) -> None:
    """Runs PTQ of both configs as runs `<model>_baseline` and `<model>_recommended`
    (or only the baseline when the two are equal), the tables going with the
    recommended one. `representative_data` is read as PTQ reads it."""
    same = recommended_config == baseline_config
    runs = [("baseline", baseline_config, tables if same else None)]
    if not same:
        runs.append(("recommended", recommended_config, tables))
    for role, config, run_tables in runs:
        info = listeners.RunInfo(listeners.PTQ, model.name, run_name=f"{model.name}_{role}",
                                 role=role)
        quantize(model, representative_data, config, run_info=info, tables=run_tables)
    if same:
        logger.info("The baseline already meets the target: the recommended config is the "
                    "baseline, logged once as %s_baseline.", model.name)
    else:
        logger.info("Baseline and recommended runs logged as %s_baseline and %s_recommended "
                    "(tick both in the QuantAnalyzer tab to compare them)", model.name,
                    model.name)
