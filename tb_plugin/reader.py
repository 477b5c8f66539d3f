"""Read path of mct-logger's plugin payloads, through TensorBoard's data provider only
(`context.multiplexer` is None under the Rust data server).

Example:

```python
for run, tag, meta, table in read_payloads(provider, ctx, experiment_id, "cle"):
    ...
```
"""

from __future__ import annotations

import json

from tensorboard.data import provider as provider_lib

from . import metadata


def read_payloads(data_provider, ctx, experiment_id: str, plugin_name: str, run: str | None = None):
    """Yields `(run, tag, {"kind", "version"}, table)` for every payload of the plugin.

    Payloads written by a newer mct-logger than this reader raise PayloadError.
    """
    run_filter = provider_lib.RunTagFilter(runs=[run]) if run is not None else None
    tensors = data_provider.list_tensors(
        ctx, experiment_id=experiment_id, plugin_name=plugin_name, run_tag_filter=run_filter
    )
    for run_name, tags in tensors.items():
        read = data_provider.read_tensors(
            ctx, experiment_id=experiment_id, plugin_name=plugin_name, downsample=1,
            run_tag_filter=provider_lib.RunTagFilter(runs=[run_name], tags=list(tags)),
        )
        for tag, series in tags.items():
            info = metadata.parse_plugin_content(plugin_name, series.plugin_content)
            datum = read[run_name][tag][-1]
            yield run_name, tag, info, json.loads(datum.numpy.item())
    blobs = data_provider.list_blob_sequences(
        ctx, experiment_id=experiment_id, plugin_name=plugin_name, run_tag_filter=run_filter
    )
    for run_name, tags in blobs.items():
        read = data_provider.read_blob_sequences(
            ctx, experiment_id=experiment_id, plugin_name=plugin_name, downsample=1,
            run_tag_filter=provider_lib.RunTagFilter(runs=[run_name], tags=list(tags)),
        )
        for tag, series in tags.items():
            info = metadata.parse_plugin_content(plugin_name, series.plugin_content)
            (reference,) = read[run_name][tag][-1].values
            body = data_provider.read_blob(ctx, blob_key=reference.blob_key)
            yield run_name, tag, info, json.loads(body)
