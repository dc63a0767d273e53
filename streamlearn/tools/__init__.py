"""Development tooling, outside the worker's import path: the demo, the benchmark and its
comparison apps, the process harness they share, and the embedded broker + Redis."""
