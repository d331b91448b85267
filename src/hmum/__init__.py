"""hmum: heterogeneous multi-treatment, multi-response uplift modeling (HMUM).

See ``../shared/DESIGN.md`` for the vocabulary and the array shapes used throughout:
N rows, F feature fields, K treatments (arm 0 is control), R responses.
"""

__version__ = "0.1.0"
