"""Mixed precision: per-layer weight bit widths under a memory budget (`search`), the exact
knapsack frontier (`bit_allocation`) and quantized models of many configs (`trials`)."""
