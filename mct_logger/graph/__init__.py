"""The model graph: a Keras model read as named nodes (the IR), each layer cloned once for a
rebuilt model, the rebuild check, and the one layer taxonomy every stage reads."""
