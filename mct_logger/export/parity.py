"""Parity, three ways: the float model, our simulation and the LiteRT interpreter,
node by node on the same samples.

Each node with an activation quantizer is matched to the `.tflite` op whose
output tensor carries its layer's name (the converter names tensors
`<model>_1/<layer>_1/<TF op>`, fused ops joined by `;`); model inputs and
outputs fall back to the interpreter's own input/output tensors. Its int8
values are dequantized, `real = (q - zero_point) * scale`, and compared:

    SQNR(a -> b) = 10 log10( sum a^2 / sum (a - b)^2 )   [dB]

float -> simulated, float -> LiteRT and simulated -> LiteRT, plus the share of
elements where simulation and LiteRT differ by more than one step of the
LiteRT tensor's grid. A node whose float -> LiteRT SQNR is more than 1 dB under
its float -> simulated SQNR is flagged with its likely cause. A node no tensor
matches is listed as unmatched with why, never dropped.

The interpreter runs with `experimental_preserve_all_tensors=True`: every
intermediate tensor stays readable (XNNPACK's results are bit-exact against
the reference kernels), `DELEGATE` entries are skipped.

Example:

```python
table = compare(info, graph, builder, flatbuffer, batches)
[n.node for n in table.nodes if n.flagged]
```
"""

from __future__ import annotations

import re
import warnings

import numpy as np

from mct_logger.export.results import NodeParity, OpInfo, OutputAgreement, ParityTable
from mct_logger.graph.ir import TensorRef
from mct_logger.diagnostics.metrics import cosine_similarity, sqnr_db
from mct_logger.quantization.quantsim import QuantizerFactory

FLAG_DB = 1.0  # LiteRT losing more than this against the simulation is flagged
CONVERSION_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})


def interpreter(flatbuffer: bytes, preserve: bool = True, threads: int | None = None):
    """An `ai_edge_litert` interpreter of `flatbuffer`, tensors allocated."""
    from ai_edge_litert.interpreter import Interpreter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # preserve_all_tensors "for debugging"
        it = Interpreter(model_content=flatbuffer, num_threads=threads,
                         experimental_preserve_all_tensors=preserve)
    it.allocate_tensors()
    return it


def predict(path: str, inputs, threads: int | None = None) -> list[np.ndarray]:
    """The outputs (dequantized to float64) of the `.tflite` at `path` on `inputs`
    (an array, or a list with one array per model input), one sample at a time."""
    with open(path, "rb") as f:
        it = interpreter(f.read(), preserve=False, threads=threads)
    return run_interpreter(it, inputs if isinstance(inputs, (list, tuple)) else [inputs])


def run_interpreter(it, batch: list) -> list[np.ndarray]:
    """The model outputs (dequantized to float) for `batch`, one sample at a time."""
    outputs = []
    for i in range(len(batch[0])):
        _feed(it, [x[i:i + 1] for x in batch])
        it.invoke()
        outputs.append([_dequantized(it, d["index"], d) for d in it.get_output_details()])
    return [np.concatenate([o[k] for o in outputs]) for k in range(len(outputs[0]))]


def _feed(it, sample: list) -> None:
    for detail, x in zip(it.get_input_details(), sample):
        if np.issubdtype(detail["dtype"], np.integer):
            scale, zero = detail["quantization"]
            info = np.iinfo(detail["dtype"])
            x = np.clip(np.round(x / scale) + zero, info.min, info.max)
        x = np.asarray(x, dtype=detail["dtype"]).reshape(detail["shape"])
        it.set_tensor(detail["index"], x)


def _dequantized(it, index: int, detail: dict) -> np.ndarray:
    value = np.array(it.get_tensor(index))
    scale, zero = _grid(detail)
    if scale and np.issubdtype(value.dtype, np.integer):
        return (value.astype(np.float64) - zero) * scale
    return value.astype(np.float64)


def _grid(detail: dict) -> tuple[float, int]:
    params = detail.get("quantization_parameters") or {}
    scales = params.get("scales")
    if scales is not None and len(scales) == 1:
        return float(scales[0]), int(params["zero_points"][0])
    scale, zero = detail.get("quantization", (0.0, 0))
    return float(scale), int(zero)


def layer_scopes(tensor_name: str) -> set[str]:
    """The Keras layer names in a converter tensor name (`model_1/layer_1/op;...`):
    each name scope after the model's, less the numeric suffix TensorFlow made it
    unique with (layer `re_lu_1` runs in scope `re_lu_1_2` when `re_lu` took
    `re_lu_1`)."""
    found = set()
    for part in tensor_name.split(";"):
        pieces = part.split("/")
        for piece in pieces[1:-1] or pieces[1:2]:
            found.add(re.sub(r"_\d+$", "", piece))
    return found


def compared_nodes(graph, plan) -> list[str]:
    """The nodes parity compares: those with an activation quantizer, in graph order."""
    return [n for n in graph.nodes if plan[n].activation is not None]


def float_model(info, graph):
    """The float reference model with every compared node's output appended to its outputs."""
    return info.float_graph.to_keras(
        name=f"{graph.name}_float",
        extra_outputs=[TensorRef(n, 0) for n in compared_nodes(graph, info.plan)])


def compare(info, graph, builder, flatbuffer: bytes, batches, reference=None) -> ParityTable:
    """The parity table of `flatbuffer` against `info`'s simulation (see module docstring);
    `reference`: `float_model(info, graph)` if already built."""
    it = interpreter(flatbuffer)
    details = {d["index"]: d for d in it.get_tensor_details()}
    ops = [op for op in it._get_ops_details() if op["op_name"] != "DELEGATE"]
    plan = info.plan
    compared = compared_nodes(graph, plan)
    op_of, unmatched = _match(graph, builder, ops, details, compared, it)
    float_values = _node_outputs(reference or float_model(info, graph), batches,
                                 len(graph.outputs))
    factory = QuantizerFactory(graph, plan, info.encodings)

    def wrap(node, outs):
        quantizer = factory.activation(node)
        return outs if quantizer is None else [quantizer(outs[0])] + list(outs[1:])

    sim_model = graph.to_keras(make_layer=factory.weights, wrap_outputs=wrap,
                               extra_outputs=[TensorRef(n, 0) for n in compared])
    sim_values = _node_outputs(sim_model, batches, len(graph.outputs))
    tensors = sorted({t for t in op_of.values()})
    output_tensors = [d["index"] for d in it.get_output_details()]
    lite_values = {t: [] for t in tensors + output_tensors}
    for batch in batches:
        for i in range(len(batch[0])):
            _feed(it, [x[i:i + 1] for x in batch])
            it.invoke()
            for t in lite_values:
                lite_values[t].append(_dequantized(it, t, details[t]))
    lite = {t: np.concatenate(v) for t, v in lite_values.items()}
    rows = []
    for k, node in enumerate(compared):
        if node not in op_of:
            continue
        tensor = op_of[node]
        f = float_values["nodes"][k]
        s = sim_values["nodes"][k]
        lv = lite[tensor]
        if lv.size != s.size:
            unmatched[node] = (f"its tensor {details[tensor]['name']!r} has shape "
                               f"{list(details[tensor]['shape'])}, the node {list(s.shape[1:])}")
            continue
        lv = lv.reshape(s.shape)
        rows.append(_row(node, tensor, details, ops, f, s, lv, info, builder))
    steps = {r.node: r.scale or r.sim_scale for r in rows}
    outputs = [
        _agreement(graph.outputs[k].node, float_values["outputs"][k], sim_values["outputs"][k],
                   lite[t].reshape(sim_values["outputs"][k].shape),
                   steps.get(graph.outputs[k].node) or _grid(details[t])[0])
        for k, t in enumerate(output_tensors)
    ]
    return ParityTable(
        nodes=rows, unmatched=unmatched, ops=_op_table(ops, details, graph, builder, info),
        outputs=outputs, num_samples=sum(len(b[0]) for b in batches))


def _node_outputs(model, batches, num_outputs: int) -> dict:
    chunks = []
    for batch in batches:
        out = model(list(batch), training=False)
        out = out if isinstance(out, (list, tuple)) else [out]
        chunks.append([np.asarray(o, dtype=np.float64) for o in out])
    joined = [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]
    return {"outputs": joined[:num_outputs], "nodes": joined[num_outputs:]}


def _match(graph, builder, ops, details, compared, it) -> tuple[dict, dict]:
    """node -> tensor index of the last op whose output names the node's layers."""
    op_of, unmatched = {}, {}
    scopes = [(op, layer_scopes(details[op["outputs"][0]]["name"])) for op in ops
              if len(op["outputs"])]
    for node in compared:
        names = builder.layer_names.get(node, set())
        hits = [op for op, found in scopes if names & found]
        if hits:
            op_of[node] = hits[-1]["outputs"][0]
    for k, ref in enumerate(graph.outputs):
        if ref.node in compared and ref.node not in op_of:
            op_of[ref.node] = it.get_output_details()[k]["index"]
    for k, name in enumerate(graph.input_names):
        if name in compared and name not in op_of:
            op_of[name] = it.get_input_details()[k]["index"]
    for node in compared:
        if node not in op_of:
            unmatched[node] = ("no .tflite tensor carries its layer's name (the converter "
                               "fused it away or renamed it)")
    return op_of, unmatched


def _row(node, tensor, details, ops, f, s, lv, info, builder) -> NodeParity:
    detail = details[tensor]
    scale, zero = _grid(detail)
    op = next((o for o in ops if tensor in o["outputs"]), None)
    encoding = info.encodings[node].activation
    ours = float(np.max(encoding.scale))
    ours_zero = (int(round(-128 - float(np.max(encoding.offset))))
                 if encoding.bitwidth == 8 else None)
    step = scale if scale else ours
    beyond = float(np.mean(np.abs(s - lv) > step * 1.0001))
    row = NodeParity(
        node=node, op_index=op["index"] if op else None, op_name=op["op_name"] if op else "input",
        tensor=detail["name"], dtype=np.dtype(detail["dtype"]).name,
        scale=scale, zero_point=zero, sim_scale=ours, sim_zero_point=ours_zero,
        sqnr_float_sim_db=sqnr_db(f, s), sqnr_float_litert_db=sqnr_db(f, lv),
        sqnr_sim_litert_db=sqnr_db(s, lv), beyond_one_step=beyond,
    )
    if row.sqnr_float_sim_db - row.sqnr_float_litert_db > FLAG_DB:
        row.flagged = True
        row.cause = _cause(row, op, details, builder, node)
    return row


def _cause(row, op, details, builder, node) -> str:
    if row.dtype.startswith("float"):
        return "an op left in float (no int8 grid at its input or output)"
    if row.scale and abs(row.scale - row.sim_scale) > 1e-6 * max(row.sim_scale, 1e-30):
        if row.op_name == "CONCATENATION" or "concat" in row.tensor.lower():
            return (f"requantization at a shared grid: the converter gave the concatenation "
                    f"one scale ({row.scale:.4g} vs our {row.sim_scale:.4g})")
        return (f"the converter's own rewrite: its grid is scale {row.scale:.4g}, zero point "
                f"{row.zero_point} vs our {row.sim_scale:.4g}, {row.sim_zero_point}")
    if node in builder.adaptations:
        return "; ".join(builder.adaptations[node])
    if row.op_name in ("AVERAGE_POOL_2D", "MEAN", "SUM"):
        return "integer averaging (LiteRT rounds the int32 sum / count; we round in float)"
    if row.op_name in ("ADD", "SUB", "MUL"):
        return "integer rescaling of the inputs to a common scale (fixed-point multipliers)"
    if ";" in row.tensor and any(k in row.tensor for k in ("Relu", "relu")):
        return ("a fused activation clamped in the integer kernel, after bias rounding "
                "(int32 bias at s_in*s_w)")
    if row.op_name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        return ("bias rounding and integer requantization (int32 bias at s_in*s_w, "
                "fixed-point output multiplier), or error carried from its input")
    return "error carried from its input (the op itself copies or rescales values)"


def _agreement(node, f, s, lv, step) -> OutputAgreement:
    """`step`: the output's int8 grid step (None for a float output)."""
    classes = s.ndim == 2 and s.shape[1] > 1
    within = float(np.mean(np.abs(s - lv) <= step * 1.0001)) if step else None
    return OutputAgreement(
        node=node,
        cosine_sim_litert=cosine_similarity(s, lv),
        cosine_float_litert=cosine_similarity(f, lv),
        cosine_float_sim=cosine_similarity(f, s),
        top1_sim_litert=float(np.mean(np.argmax(s, 1) == np.argmax(lv, 1))) if classes else None,
        top1_float_litert=float(np.mean(np.argmax(f, 1) == np.argmax(lv, 1))) if classes else None,
        within_one_step=within,
        sqnr_sim_litert_db=sqnr_db(s, lv),
    )


def _op_table(ops, details, graph, builder, info) -> list[OpInfo]:
    owners = {}
    for node, names in builder.layer_names.items():
        for name in names:
            owners.setdefault(name, []).append(node)
    table = []
    for op in ops:
        out = details[op["outputs"][0]] if op["outputs"] else None
        dtype = np.dtype(out["dtype"]).name if out else "none"
        nodes = sorted({n for s in layer_scopes(out["name"]) if out for n in owners.get(s, [])},
                       key=list(graph.nodes).index)
        reason = None
        if dtype.startswith("float") and op["op_name"] not in CONVERSION_OPS:
            reason = _float_reason(nodes, info, builder)
        table.append(OpInfo(index=op["index"], op_name=op["op_name"], dtype=dtype,
                            tensor=out["name"] if out else "", nodes=nodes, float_reason=reason))
    return table


def _float_reason(nodes, info, builder) -> str:
    for node in nodes:
        if node in builder.float_weights:
            return f"{node}: {builder.float_weights[node]}"
        plan = info.plan.get(node)
        if plan is not None and plan.reason is not None and plan.note and (
                plan.reason.value in ("unsupported", "kept_float")):
            return f"{node}: {plan.note}"
    who = f"{', '.join(nodes)}: " if nodes else ""
    return f"{who}no int8 grid at its output, so the converter kept it in float"
