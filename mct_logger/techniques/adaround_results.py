"""The AdaRound stage's result: per layer, the reconstruction loss with nearest and
with learned rounding, and how many weights were rounded the other way.

Example:

```python
result = info.stage_results["adaround"]
for layer in result.layers.values():
    print(layer.node, layer.loss_nearest, layer.loss_adaround, layer.flipped_fraction)
```
"""

from __future__ import annotations

import dataclasses

from mct_logger.utils.json_safe import json_number


@dataclasses.dataclass
class AdaRoundLayer:
    """What AdaRound did to one kernel.

    Attributes:
        node: the graph node.
        kernel: the weight's name ("kernel").
        num_weights: weights in the kernel.
        iterations: optimisation steps run.
        loss_nearest / loss_adaround: reconstruction loss (mean squared error of the
            layer's output after its activation, float target, quantized input)
            with nearest rounding and with the learned rounding, over the cached
            samples.
        flipped_fraction: share of the weights rounded away from nearest (0 to 1).
        kept_nearest: the learned rounding did not lower the loss, so the layer
            keeps nearest rounding (then `flipped_fraction` is 0).
        activation: the activation included in the loss ("linear" when none).
        num_samples: cached samples the layer learned from.
        seconds: wall seconds of the layer (cache, optimisation, losses).
        step_seconds: mean wall seconds of one optimisation step once traced
            (the second step on), None with fewer than 2 iterations.
    """

    node: str
    kernel: str
    num_weights: int
    iterations: int
    loss_nearest: float
    loss_adaround: float
    flipped_fraction: float
    kept_nearest: bool = False
    activation: str = "linear"
    num_samples: int = 0
    seconds: float = 0.0
    step_seconds: float | None = None

    def as_dict(self) -> dict:
        return {
            "node": self.node, "kernel": self.kernel, "num_weights": self.num_weights,
            "iterations": self.iterations,
            "loss_nearest": json_number(self.loss_nearest),
            "loss_adaround": json_number(self.loss_adaround),
            "flipped_fraction": json_number(self.flipped_fraction),
            "kept_nearest": self.kept_nearest, "activation": self.activation,
            "num_samples": self.num_samples, "seconds": json_number(self.seconds),
            "step_seconds": json_number(self.step_seconds)
            if self.step_seconds is not None else None,
        }


@dataclasses.dataclass
class AdaRoundResult:
    """The "adaround" stage's result.

    Attributes:
        layers: node -> AdaRoundLayer, in graph order.
        skipped: node -> why a quantized kernel keeps nearest rounding.
        config: the `AdaRoundConfig` used.
        seconds: wall seconds of the optimisation (all layers).
        plan / encodings: the run's `NodePlan`s and `NodeEncodings` by node name
            (set by the PTQ engine, so a listener needs no earlier result).
    """

    layers: dict = dataclasses.field(default_factory=dict)
    skipped: dict = dataclasses.field(default_factory=dict)
    config: object = None
    seconds: float = 0.0
    version: int = 1
    plan: dict | None = None
    encodings: dict | None = None

    def to_tables(self) -> dict:
        """`{"adaround": {"iterations", "layers": [...], "skipped": {node: reason}}}`."""
        return {
            "adaround": {
                "iterations": getattr(self.config, "iterations", None),
                "seconds": json_number(self.seconds),
                "layers": [layer.as_dict() for layer in self.layers.values()],
                "skipped": dict(self.skipped),
            }
        }

    def columns(self) -> dict:
        """node -> the layer-table fields {"adaround_loss_nearest",
        "adaround_loss", "adaround_flipped"} (JSON-able)."""
        return {
            name: {"adaround_loss_nearest": json_number(layer.loss_nearest),
                   "adaround_loss": json_number(layer.loss_adaround),
                   "adaround_flipped": json_number(layer.flipped_fraction)}
            for name, layer in self.layers.items()
        }
