"""The tracer: IR, primitives and their shape rules, staging, jit."""
