"""Model compression: spatial SVD, weight SVD and channel pruning, with AIMET's
greedy per-layer ratio selection.

- `cost`: MACs and parameters of layers and models;
- `svd`: a layer as two of rank r (spatial or weight SVD);
- `channel_pruning`: input channels removed, weights reconstructed by least squares;
- `greedy`: candidate ratios and the threshold search over evaluation scores;
- `eval_scores`: the scores as a resumable JSON file;
- `compress`: `compress_model`, the driver;
- `results`: what it reports.

Example:

```python
from mct_logger import compress_model
compressed, stats = compress_model(model, evaluate, 0.5, scheme="spatial_svd")
```
"""
