"""The similarity stage: float reference vs quantized model along the network.

It runs after the quantized model is built and measures, at every quantized
node: cosine similarity per sample (for the per-sample plots), SQNR in dB
accumulated and isolated, and the histogram of the quantized output on the same
bins as the float one, so the two can sit side by side.

Example:

```python
result = analyze_similarity(info.float_graph, info.plan, info.encodings, batches)
result.cosine[3]           # per-node cosine of sample 3, in network order
result.sqnr_isolated_db    # node -> dB
```
"""

from __future__ import annotations

import dataclasses

import numpy as np

import keras

from mct_logger.activations import HistogramCounts, PairedActivations
from mct_logger.graph import Graph
from mct_logger.quantization.quantsim import compile_inference, quantizers


@dataclasses.dataclass
class SimilarityResult:
    """Float-vs-quantized comparison of the quantized model.

    Attributes:
        nodes: the compared nodes, in network order.
        cosine: (samples, nodes) cosine similarity per sample, accumulated error,
            for the first `samples` representative samples.
        cosine_isolated: the same with only each node quantized.
        sqnr_accumulated_db, sqnr_isolated_db: node -> SQNR over those samples.
        quantized_histograms: node -> (edges, counts) of the quantized output over
            all representative data, on the float histogram's bins.
        num_samples: samples in the per-sample comparison.
    """

    nodes: list
    cosine: np.ndarray
    cosine_isolated: np.ndarray
    sqnr_accumulated_db: dict
    sqnr_isolated_db: dict
    quantized_histograms: dict
    num_samples: int
    version: int = 1


def analyze_similarity(
    graph: Graph,
    plan: dict,
    encodings: dict,
    batches: list,
    samples: int = 20,
    float_histograms: dict | None = None,
    quantized_graph: Graph | None = None,
    quantized_model: keras.Model | None = None,
) -> SimilarityResult:
    """Compares float and quantized outputs of every quantized node.

    Args:
        graph: the float reference graph; `quantized_graph` the one the quantized
            model runs, if its weights differ (bias correction).
        batches: representative batches; the first `samples` samples give the
            per-sample comparison and SQNR, all of them the quantized histograms.
        float_histograms: node -> (edges, counts) of the float outputs; the
            outputs of `quantized_model` (the PTQ result) are counted on the same edges.
    """
    # The per-sample comparison runs eagerly on a few samples: tracing the
    # three-path model would cost more than running it.
    paired = PairedActivations(graph, plan, encodings, quantized_graph=quantized_graph,
                               compiled=False)
    errors = paired.errors(_first_samples(batches, samples))
    nodes = paired.nodes
    return SimilarityResult(
        nodes=nodes,
        cosine=np.stack([errors[n].cosine_per_sample("accumulated") for n in nodes], axis=1),
        cosine_isolated=np.stack([errors[n].cosine_per_sample("isolated") for n in nodes], axis=1),
        sqnr_accumulated_db={n: errors[n].sqnr_accumulated_db for n in nodes},
        sqnr_isolated_db={n: errors[n].sqnr_isolated_db for n in nodes},
        quantized_histograms=(
            _quantized_histograms(quantized_model, batches, float_histograms)
            if quantized_model is not None and float_histograms else {}
        ),
        num_samples=errors[nodes[0]].samples if nodes else 0,
    )


def _first_samples(batches, samples: int) -> list:
    chosen, left = [], samples
    for batch in batches:
        if left <= 0:
            break
        chosen.append([x[:left] for x in batch])
        left -= len(batch[0])
    return chosen


def _quantized_histograms(model: keras.Model, batches, float_histograms) -> dict:
    """Histograms of the quantized model's outputs on the float histograms' bins,
    counted in-graph over all batches (one compiled pass per batch).

    Reads the outputs of the model's own activation quantizers, so the model is
    extended, not rebuilt.
    """
    found = quantizers(model)
    nodes = [n for n in float_histograms if "activation" in found.get(n, {})]
    if not nodes:
        return {}
    counts = [
        HistogramCounts(float_histograms[n][0])(found[n]["activation"].output) for n in nodes
    ]
    run = compile_inference(keras.Model(model.inputs, counts))
    totals = {n: 0.0 for n in nodes}
    for batch in batches:
        values = run(batch if len(batch) > 1 else batch[0])
        values = values if isinstance(values, (list, tuple)) else [values]
        for n, value in zip(nodes, values):
            totals[n] = totals[n] + keras.ops.convert_to_numpy(value)[0].astype(np.float64)
    return {n: (float_histograms[n][0], totals[n]) for n in nodes}
