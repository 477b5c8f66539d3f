"""Float-vs-quantized diagnostics: the error measures (SQNR, MSE, cosine), paired activations,
the similarity stage along the network, and weights before vs after quantization."""
