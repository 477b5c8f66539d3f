"""The stages that apply a technique to the graph (CLE, AdaRound, bias correction),
each returning `(graph, result)` for `keras_post_training_quantization`, or the
graph unchanged and a `SkippedStageResult` naming the config field that turned it off.

Order (as AIMET recommends and the AdaRound paper applies them): batch-norm
folding and CLE before the grids are set, AdaRound after them, bias correction
last (it then corrects what mean shift the learned rounding leaves, measured
against the float graph before AdaRound).

Example:

```python
graph, result = adaround_stage(graph, plan, encodings, batches, config)
```
"""

from __future__ import annotations

import dataclasses
import logging

from mct_logger.graph.ir import Graph
from mct_logger.ptq.results import SkippedStageResult
from mct_logger.quantization.config import QuantizationConfig
from mct_logger.techniques.adaround import adaround_graph
from mct_logger.techniques.bias_correction import correct_bias_graph
from mct_logger.techniques.cross_layer_equalization import equalize_graph, weight_ranges_only
from mct_logger.utils.progress import progress_bar

__all__ = ["adaround_stage", "bias_correction_stage", "cle_stage"]

logger = logging.getLogger("mct_logger")


def cle_stage(graph: Graph, config: QuantizationConfig):
    """CLE when configured; the weight-range tables of every weight layer always."""
    if not config.cross_layer_equalization:
        return graph, weight_ranges_only(
            graph, "off (QuantizationConfig.cross_layer_equalization=False); weight "
            "ranges recorded to help decide")
    return equalize_graph(graph)


def adaround_stage(graph: Graph, plan, encodings, batches, config: QuantizationConfig):
    """AdaRound (`techniques.adaround`) when configured and there is data to learn from."""
    if config.adaround is None or not batches:
        reason = ("AdaRound is off (QuantizationConfig.adaround=None): nearest rounding"
                  if config.adaround is None else "AdaRound needs representative data and "
                  f"none was given (grids from {config.encodings_file}): nearest rounding")
        if config.adaround is not None:
            logger.warning("QuantizationConfig.adaround is set but %s.", reason)
        return graph, SkippedStageResult(reason, plan=plan, encodings=encodings,
                                         off=config.adaround is None)
    rounded, result = adaround_graph(graph, plan, encodings, batches, config.adaround,
                                     progress_bar=progress_bar)
    return rounded, dataclasses.replace(result, plan=plan, encodings=encodings)


def bias_correction_stage(graph: Graph, plan, encodings, batches, config: QuantizationConfig,
                           float_graph: Graph):
    if config.bias_correction is None:
        return graph, SkippedStageResult(
            "bias correction is off (QuantizationConfig.bias_correction=None)", plan=plan,
            encodings=encodings, off=True)
    graph, result = correct_bias_graph(graph, plan, encodings, batches, config.bias_correction,
                                       float_graph=None if graph is float_graph else float_graph)
    return graph, dataclasses.replace(result, plan=plan, encodings=encodings)
