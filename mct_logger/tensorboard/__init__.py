"""TensorBoard writing: run folders, event files, one listener per kind of run."""
