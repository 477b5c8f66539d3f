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

from mct_logger.activations import PairedActivations
from mct_logger.graph import Graph, TensorRef
from mct_logger.quantization.quantsim import (
    QuantizerFactory,
    apply_encodings,
    compile_inference,
)


@dataclasses.dataclass
class SimilarityResult:
    """Float-vs-quantized comparison of the quantized model.

    Attributes:
        nodes: the compared nodes, in network order.
        cosine: (samples, nodes) cosine similarity per sample, accumulated error.
        cosine_isolated: the same with only each node quantized.
        sqnr_accumulated_db, sqnr_isolated_db: node -> SQNR over the compared samples.
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
) -> SimilarityResult:
    """Compares float and quantized outputs of every quantized node.

    Args:
        graph: the float reference graph; `quantized_graph` the one the quantized
            model runs, if its weights differ (bias correction).
        batches: representative batches; the first `samples` samples give the
            per-sample comparison, all of them the quantized histograms.
        float_histograms: node -> (edges, counts) of the float outputs; the
            quantized outputs are binned on the same edges.
    """
    paired = PairedActivations(graph, plan, encodings, quantized_graph=quantized_graph)
    errors = paired.errors(_first_samples(batches, samples))
    nodes = paired.nodes
    result = SimilarityResult(
        nodes=nodes,
        cosine=np.stack([errors[n].cosine_per_sample("accumulated") for n in nodes], axis=1),
        cosine_isolated=np.stack([errors[n].cosine_per_sample("isolated") for n in nodes], axis=1),
        sqnr_accumulated_db={n: errors[n].sqnr_accumulated_db for n in nodes},
        sqnr_isolated_db={n: errors[n].sqnr_isolated_db for n in nodes},
        quantized_histograms={},
        num_samples=errors[nodes[0]].samples if nodes else 0,
    )
    if float_histograms:
        result.quantized_histograms = _quantized_histograms(
            quantized_graph or graph, plan, encodings, batches, float_histograms
        )
    return result


def _first_samples(batches, samples: int) -> list:
    chosen, left = [], samples
    for batch in batches:
        if left <= 0:
            break
        chosen.append([x[:left] for x in batch])
        left -= len(batch[0])
    return chosen


def _quantized_histograms(graph, plan, encodings, batches, float_histograms) -> dict:
    """Histograms of the quantized model's outputs, one forward pass per batch."""
    nodes = [n for n in float_histograms if n in graph.nodes]
    factory = QuantizerFactory(graph, plan)

    def wrap_outputs(node, outputs):
        quantizer = factory.activation(node)
        return outputs if quantizer is None else [quantizer(outputs[0])] + list(outputs[1:])

    model = graph.to_keras(
        name=f"{graph.name}_quantized_outputs", make_layer=factory.weights,
        wrap_outputs=wrap_outputs, extra_outputs=[TensorRef(n, 0) for n in nodes],
    )
    apply_encodings(model, encodings)
    run = compile_inference(model)
    skip = len(graph.outputs)
    counts = {n: np.zeros(len(float_histograms[n][1]), dtype=np.float64) for n in nodes}
    for batch in batches:
        values = run(batch if len(batch) > 1 else batch[0])
        values = values if isinstance(values, (list, tuple)) else [values]
        for n, value in zip(nodes, values[skip:]):
            edges = float_histograms[n][0]
            counts[n] += _bin(np.asarray(value), edges)
    return {n: (float_histograms[n][0], counts[n]) for n in nodes}


def _bin(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of `values` in the bins `edges`; values outside go to the edge bins."""
    bins = len(edges) - 1
    lo, width = float(edges[0]), float(edges[-1] - edges[0]) or 1.0
    index = ((values.reshape(-1).astype(np.float64) - lo) * (bins / width)).astype(np.int64)
    np.clip(index, 0, bins - 1, out=index)
    return np.bincount(index, minlength=bins).astype(np.float64)
