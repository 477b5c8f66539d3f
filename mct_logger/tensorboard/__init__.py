"""TensorBoard logging: the log folder, the event writer, one listener per run kind (PTQ,
analysis, compression, recommendation) and what they write (stage summaries, plots, payloads).

Nothing here imports TensorFlow at module load: the event writer is plain protobuf."""
