import pytest

from hmum.metrics import _engine


@pytest.fixture
def tiny_engine(monkeypatch):
    """Run the large-input code paths on small inputs: chunks of 5 rows, the
    packed-key sorts instead of argsort, and sorts split over three threads."""
    monkeypatch.setattr(_engine, "CHUNK", 5)
    monkeypatch.setattr(_engine, "_SMALL", 0)
    monkeypatch.setattr(_engine, "_PARALLEL_MIN", 8)
    monkeypatch.setenv("HMUM_NUM_THREADS", "3")
