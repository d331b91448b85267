"""The self-contained HTML report beside report.md, readable curves and the oracle's wording."""

import re
from html.parser import HTMLParser

import pytest

from hmum.workflows.reports import markdown_to_html, write_html_report
from tests.synth import make_experiment


class Page(HTMLParser):
    """Tables, images and every src/href of a page."""

    def __init__(self):
        super().__init__()
        self.tables, self.images, self.links, self.tags = 0, [], [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "table":
            self.tables += 1
        if tag == "img":
            self.images.append(a.get("src", ""))
        for key in ("src", "href"):
            if key in a:
                self.links.append(a[key])


def _parse(text):
    p = Page()
    p.feed(text)
    return p


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    from hmum.models.registry import get_model
    from hmum.workflows.explain import explain
    from hmum.workflows.train import evaluate_models

    out = tmp_path_factory.mktemp("html")
    d = make_experiment(n=900, K=2, R=2, effect=0.8, seed=3)
    est = get_model("tlearner", d.schema, trainer={"max_epochs": 1, "batch_size": 256})
    est.fit(d)
    ex = explain(est, d, out / "report" / "explain", repeats=2, rows=500)
    res = evaluate_models({"tlearner": est}, d, out / "report", title="t", explanations={
        "tlearner": ex})
    return res


def test_html_report_has_every_table_and_image_embedded(evaluated):
    md = evaluated["report"].read_text()
    html = evaluated["html"].read_text()
    assert evaluated["html"] == evaluated["report"].with_suffix(".html")
    page = _parse(html)
    n_tables = len(re.findall(r"^\|[-|]+\|$", md, flags=re.M))  # one separator per table
    n_images = len(re.findall(r"^!\[", md, flags=re.M))
    # uplift, levels, ground truth, 4 explanation tables; 4 curve PNGs + 4 importance charts
    assert n_tables == 3 + 4 and n_images == 4 + 4
    assert page.tables == n_tables
    assert len(page.images) == n_images
    assert all(s.startswith("data:image/png;base64,") for s in page.images)
    assert all(s.startswith("data:") for s in page.links)  # nothing external, nothing relative
    assert not {"script", "link", "iframe"} & page.tags
    assert "not found" not in html
    assert "Which features drive the predicted uplift" in html


def test_oracle_wording(evaluated):
    md = evaluated["report"].read_text()
    assert "best any model" not in md
    assert "the Qini of ranking by the true uplift on the same rows" in md


def test_curves_model_and_random_on_their_own_scale(tmp_path):
    import numpy as np

    from hmum.metrics.plots import plot_qini_curve

    rng = np.random.default_rng(0)
    y, t = rng.random(3000), rng.integers(0, 2, 3000)
    ax = plot_qini_curve(y, rng.random(3000), t, perfect=False, share=True,
                         ylabel="Qini: cumulative incremental y units")
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[0].startswith("model") and labels[1] == "random" and len(labels) == 2
    assert ax.get_lines()[0].get_xdata().max() == pytest.approx(1.0)
    assert "share of users targeted" in ax.get_xlabel()
    assert "units" in ax.get_ylabel()


def test_markdown_to_html_trade_off_plot_and_missing_image(tmp_path):
    from hmum.decision.plots import plot_tradeoff

    plot_tradeoff(["HMUM", "fixed w", "oracle"], [1.0, 0.5, 2.0], [0.2, 0.4, 1.0],
                  tmp_path / "tradeoff.png", x_label="Δ a (%)", y_label="Δ b (%)", title="t")
    md = ("# r\n\n| strategy | Δ a |\n|---|---|\n| HMUM | +1.00% |\n\n![trade-off](tradeoff.png)"
          "\n\n![gone](missing.png)\n\ntext with `code` & <b>\n")
    (tmp_path / "report.md").write_text(md)
    page_text = write_html_report(tmp_path / "report.md").read_text()
    page = _parse(page_text)
    assert page.tables == 1 and len(page.images) == 1
    assert page.images[0].startswith("data:image/png;base64,")
    assert "missing.png not found" in page_text and "&lt;b&gt;" in page_text
    assert "<code>code</code>" in markdown_to_html(md, tmp_path)
