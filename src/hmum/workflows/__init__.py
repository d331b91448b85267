"""End-to-end jobs: train/evaluate (``train``), DDM (``ddm``), the demo (``demo``),
the benchmark harness (``bench``) and report helpers (``reports``)."""
