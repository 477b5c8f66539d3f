"""Post-training quantization: the ordered stages (`pipeline`) and the typed results they
return to listeners (`results`)."""
