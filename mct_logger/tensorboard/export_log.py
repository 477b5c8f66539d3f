"""The TensorBoard listener of a LiteRT export: a `LiteRTExport` in, the run
`NN_litert_export` out, in the folder of the PTQ run it exports (NN follows
that run's last stage), or in a fresh folder when that run was not logged.

The run holds:
- the graph, each node carrying its parity figures as readable attributes
  (`litert_op`, `litert_dtype`, `litert_scale`, `sqnr_float_sim_db`,
  `sqnr_float_litert_db`, `sqnr_sim_litert_db`, `beyond_one_step`,
  `litert_flagged`, `litert_cause`, `litert_unmatched`);
- the QuantAnalyzer tab's "deployment" payload (`tb_plugin.metadata.SHAPES`):
  the three SQNR curves along the network, flagged nodes first, op counts,
  file sizes and the output agreement, for its Deployment view;
- three scalar runs `NN_litert_export/{float_sim,float_litert,sim_litert}` with
  `sqnr_db` per node (step = node index in the payload's rows);
- a text summary (`LiteRTExport.summary()`).

It only writes: every number comes from the `LiteRTExport`. Logging never
fails the export: the first failure is one warning (`run_log.LogGuard`).

Example:

```python
mct_logger.set_log_folder("logs")
model_q, info = mct_logger.keras_post_training_quantization(model, data)
info.export_litert("model.tflite")   # logs/<run>/08_litert_export
```
"""

from __future__ import annotations

import os
import re

from mct_logger.quantization.memory import graph_memory
from mct_logger.tb_plugin import metadata
from mct_logger.tb_plugin.summary import payload_summary
from mct_logger.tensorboard import events
from mct_logger.tensorboard.run_log import LogGuard, RunLog
from mct_logger.utils.json_safe import json_ready

RUN = "litert_export"
RETURNED = "The export goes on and returns its LiteRTExport"
CURVES = (("float_sim", "sqnr_float_sim_db"), ("float_litert", "sqnr_float_litert_db"),
          ("sim_litert", "sqnr_sim_litert_db"))


def next_run_index(folder: str) -> int:
    """The index after the highest `NN_` run in `folder` (0 for an empty folder)."""
    found = [int(m.group(1)) for name in os.listdir(folder)
             if (m := re.match(r"^(\d+)_", name))]
    return max(found) + 1 if found else 0


def deployment_table(model: str, result, run: str) -> dict:
    """The "deployment" payload of `result` (a `LiteRTExport`)."""
    parity = result.parity
    rows = [{
        "layer": r.node, "op": r.op_name, "op_index": r.op_index, "dtype": r.dtype,
        "scale": r.scale, "zero_point": r.zero_point, "sim_scale": r.sim_scale,
        "sim_zero_point": r.sim_zero_point, "sqnr_float_sim_db": r.sqnr_float_sim_db,
        "sqnr_float_litert_db": r.sqnr_float_litert_db,
        "sqnr_sim_litert_db": r.sqnr_sim_litert_db, "beyond_one_step": r.beyond_one_step,
        "flagged": r.flagged, "cause": r.cause,
    } for r in parity.nodes]
    flagged = sorted(parity.flagged, key=lambda r: r.sqnr_float_litert_db - r.sqnr_float_sim_db)
    counts = result.op_counts
    return json_ready({
        "model": model, "path": result.path, "io_dtype": result.io_dtype,
        "size_bytes": result.size_bytes, "float_size_bytes": result.float_size_bytes,
        "num_samples": parity.num_samples, "graph_run": run,
        "node_data_path": result.node_data_path,
        "outputs": [vars(o) for o in parity.outputs],
        "op_counts": {"int8": counts.int8, "conversions": counts.conversions,
                      "other": counts.other,
                      "float_ops": [{"op": op, "reason": why} for op, why in counts.float_ops]},
        "rows": rows, "flagged": [r.node for r in flagged],
        "unmatched": [{"layer": n, "reason": why} for n, why in parity.unmatched.items()],
        "adaptations": result.adaptations,
    })


def node_attributes(result) -> dict:
    """Graph node -> parity attributes (strings) for the Graphs tab's node card."""
    attrs = {}
    for r in result.parity.nodes:
        attrs[r.node] = {
            "litert_op": f"{r.op_name} #{r.op_index}" if r.op_index is not None else r.op_name,
            "litert_dtype": r.dtype,
            "litert_scale": f"{r.scale:.6g} (zero point {r.zero_point}); simulation "
                            f"{r.sim_scale:.6g} ({r.sim_zero_point})",
            "sqnr_float_sim_db": f"{r.sqnr_float_sim_db:.2f}",
            "sqnr_float_litert_db": f"{r.sqnr_float_litert_db:.2f}",
            "sqnr_sim_litert_db": f"{r.sqnr_sim_litert_db:.2f}",
            "beyond_one_step": f"{r.beyond_one_step:.2%}",
            "litert_flagged": str(r.flagged),
        }
        if r.cause:
            attrs[r.node]["litert_cause"] = r.cause
    for node, why in result.parity.unmatched.items():
        attrs[node] = {"litert_unmatched": why}
    for node, notes in result.adaptations.items():
        attrs.setdefault(node, {})["litert_adapted"] = "; ".join(notes)
    return attrs


class ExportTensorBoardListener:
    """`listener(event)` writes one export run from the "litert_export" event (see
    the module docstring)."""

    def __init__(self, folder: str, index: int | None = None):
        self.folder = folder
        self.index = index
        self.guard = LogGuard(folder, RETURNED)
        self.log = RunLog(folder, guard=self.guard)

    def __call__(self, event) -> None:
        if event.name != "litert_export":
            return
        index = self.index if self.index is not None else next_run_index(self.folder)
        run = f"{index:02d}_{RUN}"
        self.guard.call(self._write, run, event.graph, event.data,
                        path=os.path.join(self.folder, run))

    def _write(self, run, graph, result) -> None:
        writer = self.log.writer(run)
        attrs = node_attributes(result)
        memory = graph_memory(graph)  # float32 bytes per node (the card's Memory)
        graph_def = events.graph_pb2.GraphDef()
        for node in graph:
            inputs = [events.graph_node_name(r.node) + (f":{r.index}" if r.index else "")
                      for r in node.inputs]
            node_attrs = {"layer_class": node.layer_class, **attrs.get(node.name, {})}
            graph_def.node.append(events.node_def(
                events.graph_node_name(node.name), node.layer_class, inputs, node_attrs,
                node.output_shapes))
        writer.graph(graph_def, {events.graph_node_name(n): m["total"]
                                 for n, m in memory.items()}, "Resources")
        writer.add_summary(payload_summary(
            metadata.QUANT_ANALYZER, "deployment", "deployment",
            deployment_table(graph.name, result, run)))
        writer.text("summary", "**LiteRT int8 export** `" + result.path + "`\n\n```\n"
                    + result.summary() + "\n```")
        for name, field in CURVES:
            curve = self.log.writer(f"{run}/{name}")
            for step, row in enumerate(result.parity.nodes):
                value = getattr(row, field)
                if events.float32_finite(value):
                    curve.scalar("sqnr_db", value, step=step)

    def close(self, error: BaseException | None = None) -> None:
        try:
            self.log.close()
        except OSError as exc:
            self.guard.fail(exc)
