"""io/html_report.py: the page and tables escape what they show; figures embed as PNG."""

from data_engine.io.html_report import figure, fmt, img_tag, page, table, to_png


def test_page_and_table_escape_text_and_format_figures():
    html = page("a <b> & c", [table([["x<y", fmt(0.123456)], ["n", fmt(None)]], ["figure", "value"])])
    assert html.startswith("<!DOCTYPE html>") and html.endswith("</html>\n")
    assert "<title>a &lt;b&gt; &amp; c</title>" in html and "<h1>a &lt;b&gt; &amp; c</h1>" in html
    assert "<td>x&lt;y</td><td>0.123</td>" in html and "<td>n</td><td>-</td>" in html
    assert "<th>figure</th><th>value</th>" in html


def test_a_figure_embeds_as_base64_png():
    fig, axes = figure(2)
    assert axes.shape == (1, 2)
    png = to_png(fig)
    assert png.startswith(b"\x89PNG")
    assert img_tag(png, alt="x").startswith("<p><img alt='x' src='data:image/png;base64,iVBORw0KGgo")
