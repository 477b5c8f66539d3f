"""The text summary of each PTQ stage (the TensorBoard Text tab), from its result.

Dispatches on the result's type; every number comes from the result or from
`mct_logger.quantization.memory`.

Example:

```python
text = stage_summary("initial_graph", graph, result, graph_memory(graph))
```
"""

from __future__ import annotations

import numpy as np

from mct_logger.quantization.memory import model_memory

__all__ = ["SUMMARY_LIST_LIMIT", "stage_summary"]


def db(value: float) -> str:
    """An SQNR in dB for a table cell: one decimal, "n/a" when not finite."""
    return f"{value:.1f}" if np.isfinite(value) else "n/a"


def stage_summary(stage: str, graph, result, memory: dict, plan=None) -> str:
    """The Markdown summary of one stage: nodes, parameters, memory, what it did.

    Args:
        stage: the stage name (the heading).
        graph: the graph after the stage.
        result: the stage's result (its type chooses the extra lines).
        memory: `memory.graph_memory` of `graph` (bytes at batch 1).
        plan: the quantization plan once there is one (fused outputs counted once).
    """
    from mct_logger.ptq import results as sr
    from mct_logger.techniques.batch_norm_folding import BatchNormFoldingResult
    from mct_logger.techniques.adaround_results import AdaRoundResult
    from mct_logger.techniques.bias_correction import BiasCorrectionResult
    from mct_logger.techniques.cle_results import CrossLayerEqualizationResult

    # the headline definition (memory.model_memory): a fused output counted once
    total = (model_memory(memory, plan) if plan is not None and set(plan) >= set(memory)
             else sum(m["total"] for m in memory.values()))
    weights = sum(m["weights"] for m in memory.values())
    lines = [
        f"## {stage.replace('_', ' ').capitalize()}",
        "",
        f"- nodes: {len(graph.nodes)}",
        f"- parameters: {graph.parameter_count():,}",
        f"- memory: {total:,} bytes ({weights:,} weights + {total - weights:,} activations at batch 1)",
    ]
    if isinstance(result, (sr.SkippedStageResult, CrossLayerEqualizationResult)) and result.reason:
        lines.append(f"- skipped: {result.reason}")
    if isinstance(result, BatchNormFoldingResult):
        folded = result.folded
        lines.append(f"- folded {len(folded)} batch norm(s): " +
                     (", ".join(f"`{bn}` into `{layer}`" for bn, layer in folded.items()) or "none"))
        for bn, why in result.not_folded.items():
            lines.append(f"- kept `{bn}` as a float affine layer: {why}")
    if isinstance(result, CrossLayerEqualizationResult):
        lines += _cle_lines(result)
    if isinstance(result, BiasCorrectionResult):
        lines += _bias_correction_lines(result)
    if isinstance(result, AdaRoundResult):
        lines += _adaround_lines(result)
    if isinstance(result, sr.StatisticsResult):
        batches = "batch" if result.num_batches == 1 else "batches"
        lines.append(f"- calibrated on {result.num_samples} samples in {result.num_batches} {batches}")
    if isinstance(result, sr.QuantizationParametersResult):
        lines += ["", "| node | weights | activation range |", "|---|---|---|"]
        for node, enc in result.encodings.items():
            w = ", ".join(f"{k}: {e.bitwidth} bit{' per-channel' if e.per_channel else ''}"
                          for k, e in enc.weights.items()) or "-"
            a = (f"{enc.activation.bitwidth} bit [{float(enc.activation.min):.4g}, "
                 f"{float(enc.activation.max):.4g}]") if enc.activation is not None else "-"
            lines.append(f"| `{node}` | {w} | {a} |")
            for point, e in enc.inner_activations.items():  # a composite's sublayer outputs
                lines.append(f"| `{node}/{point}` | - | {e.bitwidth} bit [{float(e.min):.4g}, "
                             f"{float(e.max):.4g}] |")
    if isinstance(result, sr.QuantizedModelResult):
        lines.append(f"- model memory: {result.memory_before:,} -> {result.memory_after:,} bytes "
                     f"({result.memory_after / max(result.memory_before, 1):.1%})")
    return "\n".join(lines)


SUMMARY_LIST_LIMIT = 50  # rows per list in a stage's text summary


def _limited(rows: list[str]) -> list[str]:
    if len(rows) <= SUMMARY_LIST_LIMIT:
        return rows
    return rows[:SUMMARY_LIST_LIMIT] + [f"  - ... and {len(rows) - SUMMARY_LIST_LIMIT} more"]


def _span(values) -> str:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return f"{values.min():.3g} to {values.max():.3g}" if values.size else "none"


def _cle_lines(result) -> list[str]:
    """What cross-layer equalization changed; with CLE off, where the ranges are."""
    from mct_logger.techniques.weight_ranges import rank_by_spread

    if not result.applied:
        ranked = [r for r in rank_by_spread(result.weight_ranges_before) if r[2]][:5]
        lines = ["- nothing changed. The per-channel weight ranges of every weight layer "
                 "(before CLE) are logged with this run as the `cle` payload "
                 "`weight_ranges` (CLE dashboard, or `mct_logger.tb_plugin.reader."
                 "read_payloads(..., \"cle\")`); layers whose channels differ widely are "
                 "what CLE evens out."]
        if ranked:
            lines.append("- widest channel spread: " + ", ".join(
                f"`{node}` {kernel} ({score:.3g})" for node, kernel, score in ranked))
        return lines
    lines = [f"- equalized {len(result.sets)} set(s) in {result.iterations} sweep(s)"
             + ("" if result.converged else " (scales still changing when stopped)")
             + (":" if result.sets else "")]
    rows = []
    for eq in result.sets:
        for k, scales in enumerate(eq.scale_factors):
            via = f" via {', '.join(f'`{n}`' for n in eq.links[k])}" if eq.links[k] else ""
            rows.append(f"  - `{eq.members[k]}` -> `{eq.members[k + 1]}` ({eq.kind}{via}, "
                        f"{eq.activations[k]}): scale factors {_span(scales)} over "
                        f"{np.size(scales)} channels")
    lines += _limited(rows)
    lines.append(f"- high-bias folds (bias moved into the next layer): "
                 f"{len(result.high_bias_folds)} pair(s)")
    lines += _limited([
        f"  - `{fold.source}` -> `{fold.target}` ({fold.activation}): "
        f"{int(np.count_nonzero(fold.amount))} of {np.size(fold.amount)} channel(s), "
        f"amounts {_span(fold.amount)}"
        for fold in result.high_bias_folds])
    if result.high_bias_fold_skipped:
        lines.append("- high-bias fold skipped:")
        lines += _limited([f"  - `{pair}`: {why}"
                           for pair, why in result.high_bias_fold_skipped.items()])
    lines.append(f"- ReLU6 replaced by ReLU (changes the float model): "
                 + (", ".join(f"`{r['node']}` ({r['form']})" for r in result.relu6_replaced)
                    or "none"))
    if result.not_equalized:
        lines.append("- not equalized:")
        lines += _limited([f"  - `{node}`: {why}" for node, why in result.not_equalized.items()])
    if result.float_score_before is not None and result.float_score_after is not None:
        lines.append(f"- float score: {result.float_score_before:.6g} before, "
                     f"{result.float_score_after:.6g} after")
    return lines


def _bias_correction_lines(result) -> list[str]:
    """The corrected layers and the size of each correction."""
    lines = [f"- corrected {len(result.corrections)} layer(s) ({result.mode}"
             + (f", {result.num_samples} samples, {result.passes} passes" if result.num_samples
                else "") + ")"]
    if result.corrections:
        lines += ["", "| layer | method | channels | mean abs correction | max abs correction |",
                  "|---|---|---:|---:|---:|"]
        for node, correction in list(result.corrections.items())[:SUMMARY_LIST_LIMIT]:
            amount = np.abs(np.asarray(correction.correction, dtype=np.float64))
            lines.append(f"| `{node}` | {correction.method} | {amount.size} | "
                         f"{amount.mean() if amount.size else 0.0:.3g} | "
                         f"{amount.max() if amount.size else 0.0:.3g} |")
        if len(result.corrections) > SUMMARY_LIST_LIMIT:
            lines.append(f"\n... and {len(result.corrections) - SUMMARY_LIST_LIMIT} more layers")
        lines.append("")
    lines += _limited([f"- not corrected `{node}`: {why}" for node, why in result.skipped.items()])
    return lines


def _adaround_lines(result) -> list[str]:
    """Per learned kernel: the reconstruction loss with nearest and learned rounding
    and the share of weights rounded the other way."""
    config = result.config
    lines = [f"- learned the rounding of {len(result.layers)} kernel(s) "
             f"({getattr(config, 'iterations', '?')} iterations each, {result.seconds:.1f} s; "
             "AdaRound, Nagel et al. 2020)"]
    if result.layers:
        lines += ["", "| layer | weights | loss nearest | loss AdaRound | change | "
                  "rounded away from nearest | activation in the loss |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for node, layer in list(result.layers.items())[:SUMMARY_LIST_LIMIT]:
            change = ((layer.loss_adaround / layer.loss_nearest - 1.0)
                      if layer.loss_nearest > 0 else 0.0)
            kept = " (kept nearest)" if layer.kept_nearest else ""
            lines.append(f"| `{node}` | {layer.num_weights} | {layer.loss_nearest:.4g} | "
                         f"{layer.loss_adaround:.4g} | {change:+.1%}{kept} | "
                         f"{layer.flipped_fraction:.1%} | {layer.activation} |")
        if len(result.layers) > SUMMARY_LIST_LIMIT:
            lines.append(f"\n... and {len(result.layers) - SUMMARY_LIST_LIMIT} more layers")
        lines += ["", "Loss: mean squared error of the layer's output (after its activation) "
                  "against the float model, the input from the quantized layers before it, "
                  f"over {max(l.num_samples for l in result.layers.values())} cached samples.",
                  ""]
    lines += _limited([f"- nearest rounding kept for `{node}`: {why}"
                       for node, why in result.skipped.items()])
    return lines
