"""Mixed precision: per-layer weight bit widths under a memory budget (`search`), the choices
it scores and its steps table (`search_steps`), the exact knapsack frontier (`bit_allocation`)
and quantized models of many configs (`trials`)."""
