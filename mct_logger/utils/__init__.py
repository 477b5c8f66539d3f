"""Small utilities shared by every concept: JSON cleaning, the frozen heap, output paths,
argument checks, strict JSON reading."""
