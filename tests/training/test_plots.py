"""The training pictures: a collapsed model's scatter, file names the font cannot draw."""

import warnings

import matplotlib.axes
import numpy as np
from PIL import Image

from training.plots import COLLAPSED, extremes, scatter


def test_a_collapsed_model_is_said_on_its_scatter_not_given_an_empty_legend(tmp_path,
                                                                            monkeypatch):
    """One predicted value for every image: the logistic spans no width, so its legend named
    a curve no one could see; the plot says why there is none."""
    from training.correlation import report

    calls = []
    monkeypatch.setattr(matplotlib.axes.Axes, "legend", lambda *_, **__: calls.append("legend"))
    monkeypatch.setattr(matplotlib.axes.Axes, "text",
                        lambda _axes, _x, _y, text, **__: calls.append(text))
    predicted, opinion = np.full(20, 0.3), np.linspace(0, 1, 20)
    scatter(predicted, opinion, report(predicted, opinion), "collapsed", tmp_path / "c.png")
    assert calls == [COLLAPSED]
    calls.clear()
    spread = np.linspace(0.2, 0.4, 20)
    scatter(spread, opinion, report(spread, opinion), "fitted", tmp_path / "f.png")
    assert calls == ["legend"]
    calls.clear()
    spread[3] = np.nan  # no collapse, nor a curve through a NaN
    scatter(spread, opinion, report(spread, opinion), "nan", tmp_path / "n.png")
    assert calls == []


def test_extremes_escape_the_names_their_font_has_no_glyph_for(tmp_path, monkeypatch):
    """CJK file names drew as boxes (DejaVu Sans has no CJK glyphs) with a "Glyph missing"
    warning each: they are shown as \\uXXXX escapes, other names as they are."""
    names = ["猫.png", "café.png"]
    for number, name in enumerate(names):
        Image.new("RGB", (32, 24), (40 * number, 90, 160)).save(tmp_path / name)
    titles = []
    original = matplotlib.axes.Axes.set_title
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title",
                        lambda axes, text, **kw: titles.append(text) or original(axes, text,
                                                                                  **kw))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        extremes({str(tmp_path / name): 0.1 * number for number, name in enumerate(names)},
                 tmp_path / "extremes.png")
    assert [title.split("\n")[1] for title in titles] == ["\\u732b.png", "café.png"]
    assert not [w for w in caught if "Glyph" in str(w.message)]
    assert (tmp_path / "extremes.png").stat().st_size > 1_000
