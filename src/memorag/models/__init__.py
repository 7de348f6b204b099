"""Where models come from: packaged GGUF weights and the spec-string registry."""
