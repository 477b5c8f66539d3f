"""Representative data: every form users pass (arrays, callables, generators, datasets),
checked against the model inputs before any work, and streamed batch by batch on each pass."""
