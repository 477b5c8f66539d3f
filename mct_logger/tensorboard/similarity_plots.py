"""The similarity stage's cosine plots (matplotlib, drawn off-screen to PNG).

Example:

```python
plot = SamplePlot(similarity_result)
png, width, height = plot.png(0)
png, width, height = events.figure_png(summary_figure(similarity_result))
```
"""

from __future__ import annotations

import numpy as np

__all__ = ["SamplePlot", "summary_figure"]


def axis_labels(ax, nodes):
    from matplotlib.ticker import FormatStrFormatter

    # Cosines sit near 1: plain numbers, not matplotlib's "1e-5 + 9.999e-1" offset.
    ax.yaxis.set_major_formatter(FormatStrFormatter("%.6f"))
    ax.set_xlabel("Quantized node, in network order")
    if len(nodes) <= 40:
        ax.set_xticks(range(len(nodes)))
        ax.set_xticklabels(nodes, rotation=90, fontsize=7)


class SamplePlot:
    """The per-sample cosine plots, drawn fast: the axes, grid and legend are
    rendered once (all samples share one y-range, which also makes them
    comparable) and only the lines and the sample's label are redrawn per sample. The
    legend is opaque, so its pixels never depend on the lines under it: they
    are copied once and pasted over each sample's lines."""

    def __init__(self, result):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.result = result
        self.figure = Figure(figsize=(7, 3.8), dpi=72)
        self.canvas = FigureCanvasAgg(self.figure)
        self.figure.subplots_adjust(left=0.19, right=0.98, top=0.9,
                                    bottom=0.32 if len(result.nodes) <= 40 else 0.14)
        ax = self.ax = self.figure.add_subplot()
        x = np.arange(len(result.nodes))
        (self.accumulated,) = ax.plot(x, result.cosine[0], marker="o", markersize=3,
                                      label="all nodes quantized", animated=True)
        (self.isolated,) = ax.plot(x, result.cosine_isolated[0], linestyle="--", marker=".",
                                   markersize=3, label="only this node quantized", animated=True)
        finite = np.concatenate([result.cosine.ravel(), result.cosine_isolated.ravel()])
        finite = finite[np.isfinite(finite)]  # NaN (undefined) points are drawn as gaps
        low = float(finite.min()) if finite.size else 0.0
        pad = max((1.0 - low) * 0.05, 1e-7)
        ax.set_ylim(low - pad, 1.0 + pad)
        ax.set_ylabel("Cosine similarity\n(float vs quantized)")
        axis_labels(ax, result.nodes)
        ax.grid(True, alpha=0.3)
        self.legend = ax.legend(loc="lower left", fontsize=8, framealpha=1.0)
        self.legend.set_animated(True)  # pasted over the lines
        # Only the sample's label changes per image: the heading is background
        # pixels, since laying out and rasterizing text is most of a redraw.
        ax.set_title("Cosine similarity along the network")
        self.title = ax.set_title(" ", loc="left", animated=True)
        self.canvas.draw()
        self.background = self.canvas.copy_from_bbox(self.figure.bbox)
        ax.draw_artist(self.legend)
        self.legend_pixels = self.canvas.copy_from_bbox(
            self.legend.get_window_extent(self.canvas.get_renderer()).expanded(1.05, 1.1))

    def png(self, sample: int):
        from mct_logger.tensorboard import events

        self.canvas.restore_region(self.background)
        self.accumulated.set_ydata(self.result.cosine[sample])
        self.isolated.set_ydata(self.result.cosine_isolated[sample])
        self.title.set_text(f"Sample {sample}")
        for artist in (self.accumulated, self.isolated):
            self.ax.draw_artist(artist)
        self.canvas.restore_region(self.legend_pixels)
        self.figure.draw_artist(self.title)
        return events.rgba_png(self.canvas)


def summary_figure(result):
    """The cosine along the network over all samples: min-max band and mean."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 3.8), dpi=72)
    figure.subplots_adjust(left=0.19, right=0.98, top=0.9,
                           bottom=0.32 if len(result.nodes) <= 40 else 0.14)
    ax = figure.add_subplot()
    x = np.arange(len(result.nodes))
    cosine = result.cosine
    ax.fill_between(x, cosine.min(axis=0), cosine.max(axis=0), alpha=0.25,
                    label=f"min-max over {result.num_samples} samples")
    ax.plot(x, cosine.mean(axis=0), marker="o", markersize=3, label="mean")
    ax.set_ylabel("Cosine similarity\n(float vs quantized)")
    ax.set_title("Cosine similarity along the network, all nodes quantized")
    axis_labels(ax, result.nodes)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return figure
