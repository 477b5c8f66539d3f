"""The QuantAnalyzer tab's per-layer table of a PTQ run (the "layer_table" payload).

Rows come from what the stages already computed (plan, encodings, memory,
similarity); nothing is measured here. The accumulated SQNR step of a node is
`metrics.accumulated_step_db` of its inputs' carried SQNR.

Example:

```python
table = layer_table(graph, plan, encodings, similarity_result, "07_quantized_model")
table["rows"][0]["sqnr_accumulated_db"]
```
"""

from __future__ import annotations

import numpy as np

from mct_logger.tensorboard import events

from mct_logger.diagnostics import metrics
from mct_logger.quantization.memory import counted_bytes, elements_per_sample, graph_memory, model_memory
from mct_logger.analyzer.worst_layers import annotate

__all__ = ["ADAROUND_COLUMNS", "layer_table"]

# Row fields of runs that used AdaRound: reconstruction MSE with nearest and with
# learned rounding, and the share of weights rounded away from nearest (None for
# the layers it did not learn).
ADAROUND_COLUMNS = ("adaround_loss_nearest", "adaround_loss", "adaround_flipped")


def layer_table(graph, plan: dict, encodings: dict, similarity, graph_run: str | None) -> dict:
    """The QuantAnalyzer tab's per-layer table of one PTQ run ("layer_table" payload).

    One row per node in graph order, from what the stages already computed:
    the plan (bits, per-channel or not, why a node stays in float), the
    encodings (min/max), memory at batch 1 before (float32) and after (planned
    bits), and the similarity stage's SQNR (dB) and mean cosine over its samples;
    "worst_layers" ranks them (`worst_layers.worst_layers`). Runs that used
    AdaRound have `"adaround": true` and the `ADAROUND_COLUMNS` in every row.
    """
    before, after = graph_memory(graph), graph_memory(graph, plan)
    adaround = getattr(similarity, "adaround", None)

    index = {n: i for i, n in enumerate(similarity.nodes)}
    # accumulated SQNR carried through nodes without a measurement (pass-through
    # layers pass their input's error on), for each node's step from its inputs
    carried: dict = {}
    steps: dict = {}
    for node in graph:
        upstream = [carried[r.node] for r in node.inputs if r.node in carried]
        if node.name in similarity.sqnr_accumulated_db:
            acc = similarity.sqnr_accumulated_db[node.name]
            steps[node.name] = metrics.accumulated_step_db(upstream, acc)
            carried[node.name] = acc
        elif upstream:
            carried[node.name] = min(upstream)
    rows = []
    for node in graph:
        p, enc = plan[node.name], encodings.get(node.name)
        kernels = dict(enc.weights) if enc is not None else {}
        kernel = kernels.get("kernel") or next(iter(kernels.values()), None)
        i = index.get(node.name)
        rows.append({
            "layer": node.name,
            "graph_node": events.graph_node_name(node.name),
            "class": node.layer_class,
            "quantized": bool(p.quantized),
            "note": p.note or None,
            "weight_bits": kernel.bitwidth if kernel is not None else None,
            "weight_per_channel": bool(kernel.per_channel) if kernel is not None else None,
            "weight_min": float(np.min(kernel.min)) if kernel is not None else None,
            "weight_max": float(np.max(kernel.max)) if kernel is not None else None,
            "activation_bits": p.activation.bitwidth if p.activation is not None else None,
            "encoding_min": (float(np.min(enc.activation.min))
                             if enc is not None and enc.activation is not None else None),
            "encoding_max": (float(np.max(enc.activation.max))
                             if enc is not None and enc.activation is not None else None),
            "memory_before": counted_bytes(before, plan, node.name),
            "memory_after": counted_bytes(after, plan, node.name),
            "sqnr_accumulated_db": similarity.sqnr_accumulated_db.get(node.name),
            "sqnr_isolated_db": similarity.sqnr_isolated_db.get(node.name),
            "accumulated_step_db": steps.get(node.name),
            # the cosine of single-element outputs is always +-1: not reported
            "cosine": float(np.nanmean(similarity.cosine[:, i])) if i is not None and
            similarity.num_samples and elements_per_sample(node) > 1 else None,
        })
        if adaround is not None:  # runs that learned their rounding (AdaRound)
            rows[-1].update(adaround.get(node.name) or dict.fromkeys(ADAROUND_COLUMNS))
    return annotate("layer_table", {
        "source": "ptq",
        "model": graph.name,
        "samples": int(similarity.num_samples),
        "graph_run": graph_run,
        "memory_before": model_memory(before, plan),
        "memory_after": model_memory(after, plan),
        "adaround": adaround is not None,
        "rows": rows,
    })
