"""Helpers every part of mct-logger shares: argument checks, strict JSON reading."""
