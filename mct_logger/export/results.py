"""What a LiteRT export returns: `LiteRTExport` and its parity table.

Example:

```python
result = info.export_litert("model.tflite")
result.op_counts.int8, result.op_counts.float_ops      # {"CONV_2D": 5, ...}, [(op, reason)]
result.size_bytes / result.float_size_bytes            # about 0.25-0.3
[(n.node, n.cause) for n in result.parity.flagged]
print(result.summary())
```
"""

from __future__ import annotations

import collections
import dataclasses

from mct_logger.utils.json_safe import json_ready

VERSION = 1


@dataclasses.dataclass
class NodeParity:
    """One quantized node, float vs simulation vs LiteRT.

    Attributes:
        node: the graph node. op_index / op_name / tensor: its `.tflite` op and tensor.
        dtype: the tensor's type in the `.tflite` ("int8", or "float32" for a float op).
        scale, zero_point: the LiteRT tensor's grid; sim_scale, sim_zero_point: ours
            (zero point as LiteRT counts it, `-128 - offset`; None when not 8-bit).
        sqnr_float_sim_db, sqnr_float_litert_db, sqnr_sim_litert_db: SQNR in dB.
        beyond_one_step: share of elements where simulation and LiteRT differ by
            more than one step of the LiteRT grid (0 to 1).
        flagged: LiteRT loses more than 1 dB against the simulation; cause: why, likely.
    """

    node: str
    op_index: int | None
    op_name: str
    tensor: str
    dtype: str
    scale: float
    zero_point: int
    sim_scale: float
    sim_zero_point: int | None
    sqnr_float_sim_db: float
    sqnr_float_litert_db: float
    sqnr_sim_litert_db: float
    beyond_one_step: float
    flagged: bool = False
    cause: str = ""


@dataclasses.dataclass
class OpInfo:
    """One `.tflite` op: its type, output dtype, the graph nodes it computes, and
    for a float op (not a QUANTIZE/DEQUANTIZE) why it is float."""

    index: int
    op_name: str
    dtype: str
    tensor: str
    nodes: list
    float_reason: str | None = None


@dataclasses.dataclass
class OutputAgreement:
    """A model output: cosine and top-1 agreement (None when not class scores), and
    the share of elements within one output step of the simulation."""

    node: str
    cosine_sim_litert: float
    cosine_float_litert: float
    cosine_float_sim: float
    top1_sim_litert: float | None
    top1_float_litert: float | None
    within_one_step: float | None
    sqnr_sim_litert_db: float


@dataclasses.dataclass
class ParityTable:
    nodes: list  # NodeParity, in network order
    unmatched: dict  # node -> why no tensor matched
    ops: list  # OpInfo, in .tflite order
    outputs: list  # OutputAgreement per model output
    num_samples: int

    @property
    def flagged(self) -> list:
        return [n for n in self.nodes if n.flagged]


@dataclasses.dataclass
class OpCounts:
    """`int8`: op type -> count of int8 ops; `float_ops`: `(op type, reason)` of each
    float op; `conversions`: QUANTIZE/DEQUANTIZE count; `other`: ops of other types
    (int32 shape arithmetic)."""

    int8: dict
    float_ops: list
    conversions: int
    other: dict

    @classmethod
    def of(cls, ops: list) -> "OpCounts":
        int8, other, floats, conversions = collections.Counter(), collections.Counter(), [], 0
        for op in ops:
            if op.op_name in ("QUANTIZE", "DEQUANTIZE"):
                conversions += 1
            elif op.float_reason is not None:
                floats.append((op.op_name, op.float_reason))
            elif op.dtype in ("int8", "uint8", "int16"):
                int8[op.op_name] += 1
            else:
                other[op.op_name] += 1
        return cls(dict(int8), floats, conversions, dict(other))


@dataclasses.dataclass
class LiteRTExport:
    """The result of `QuantizationInfo.export_litert`.

    Attributes:
        path: the written `.tflite`. io_dtype: its input/output type.
        size_bytes / float_size_bytes: the int8 file and the float `.tflite` of the
            same (batch-norm-folded) model.
        op_counts: `OpCounts`. parity: `ParityTable`.
        adaptations: node -> notes on grids LiteRT cannot carry as they are.
        float_weights: node -> why its quantized weights stay float in the export.
        export_grids: key -> (min, max) of the grids the export calibrated itself.
        export_seconds / parity_seconds: wall time of the export and of the check.
        node_data_path: the Model Explorer node-data JSON next to the `.tflite`.
    """

    path: str
    io_dtype: str
    size_bytes: int
    float_size_bytes: int
    op_counts: OpCounts
    parity: ParityTable
    adaptations: dict
    float_weights: dict
    export_grids: dict
    export_seconds: float
    parity_seconds: float
    node_data_path: str | None = None
    version: int = VERSION

    def as_dict(self) -> dict:
        """Plain JSON-ready fields (NaN/Inf as None)."""
        return json_ready(dataclasses.asdict(self))

    def summary(self) -> str:
        """A few lines: output agreement first, then ops, sizes and flagged nodes."""
        lines = []
        for out in self.parity.outputs:
            top1 = ("" if out.top1_sim_litert is None
                    else f", top-1 agreement {out.top1_sim_litert:.2%}")
            within = "" if out.within_one_step is None else (
                f", within one output step {out.within_one_step:.2%}")
            lines.append(f"output {out.node}: cosine sim->LiteRT {out.cosine_sim_litert:.5f}"
                         f"{top1}{within} ({self.parity.num_samples} samples)")
        counts = self.op_counts
        int8 = ", ".join(f"{k} {v}" for k, v in sorted(counts.int8.items()))
        lines.append(f"int8 ops: {sum(counts.int8.values())} ({int8}); float ops: "
                     f"{len(counts.float_ops)}; quantize/dequantize: {counts.conversions}")
        for op, reason in counts.float_ops:
            lines.append(f"  float {op}: {reason}")
        lines.append(f"size: {self.size_bytes / 1024:.1f} KiB int8 vs "
                     f"{self.float_size_bytes / 1024:.1f} KiB float "
                     f"({self.size_bytes / max(self.float_size_bytes, 1):.2f}x)")
        for row in self.parity.flagged:
            lines.append(f"  flagged {row.node}: float->sim {row.sqnr_float_sim_db:.1f} dB, "
                         f"float->LiteRT {row.sqnr_float_litert_db:.1f} dB: {row.cause}")
        for node, why in self.parity.unmatched.items():
            lines.append(f"  unmatched {node}: {why}")
        return "\n".join(lines)

    def model_explorer_node_data(self) -> dict:
        """Model Explorer node data (`ai-edge-model-explorer`'s `ModelNodeData` JSON):
        sim -> LiteRT SQNR per op, keyed by the op's index in subgraph "main"
        (Model Explorer's node ids for a `.tflite`), lower values redder."""
        results = {}
        for row in self.parity.nodes:
            if row.op_index is not None:
                value = round(float(min(row.sqnr_sim_litert_db, 120.0)), 3)
                results[str(row.op_index)] = {"value": value}
        return {"main": {
            "results": results,
            "thresholds": [
                {"value": 20.0, "bgColor": "#d62728"},
                {"value": 30.0, "bgColor": "#ff9f40"},
                {"value": 40.0, "bgColor": "#ffdd57"},
            ],
        }}
