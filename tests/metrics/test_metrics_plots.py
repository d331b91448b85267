"""Curve plots: PNG files, one per (treatment, response); no matplotlib on import."""

import subprocess
import sys

import numpy as np
import pytest

from hmum.metrics.plots import plot_qini_curve, plot_uplift_curve, save_curve_plots


def test_metrics_do_not_import_matplotlib():
    code = "import sys, hmum.metrics; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_one_png_per_cell(tmp_path):
    rng = np.random.default_rng(0)
    n = 600
    arm = rng.integers(0, 3, n)
    y = np.stack([rng.integers(0, 2, n), rng.gamma(2.0, 1.0, n)], 1)
    tau_hat = rng.normal(size=(n, 2, 2))
    paths = save_curve_plots(
        y,
        tau_hat,
        arm,
        tmp_path / "out",
        response_names=["buy", "time"],
        treatment_names=["t 1", "t/2"],
        prefix="hum_",
        max_points=50,
    )
    assert [p.name for p in paths] == [
        "hum_curves_t_1_buy.png",
        "hum_curves_t_1_time.png",
        "hum_curves_t_2_buy.png",
        "hum_curves_t_2_time.png",
    ]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("plot", [plot_qini_curve, plot_uplift_curve])
def test_axes_with_perfect_model_and_random_lines(plot):
    rng = np.random.default_rng(1)
    n = 5000
    t = rng.integers(0, 2, n)
    y = rng.integers(0, 2, n)
    ax = plot(y, rng.random(n), t, max_points=100)
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[0] == "perfect" and labels[2] == "random" and labels[1].startswith("model")
    assert all(len(line.get_xdata()) <= 100 for line in ax.get_lines())
