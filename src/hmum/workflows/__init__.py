"""End-to-end jobs: train/evaluate (``train``), DDM (``ddm``), the demo (``demo``),
the benchmark harness (``bench``), scoring and store reads (``store``) and report
helpers (``reports``)."""
