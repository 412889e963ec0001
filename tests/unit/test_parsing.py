import pytest

from ingestion.parsing import ContentMismatch, ParseError, UnsupportedFormat, detect_format, parse
from tests.builders import docx_bytes, text_image, text_pdf


def test_markdown_structure_sections_lists_tables():
    md = (b"# SOP-7 Die change\n\n## Steps\n\n1. Stop the press.\n2. Lock out Q1.\n\n"
          b"| Tool | Size |\n|---|---|\n| Wrench | 19 mm |\n")
    doc = parse("sop.md", md)
    kinds = [(e.kind, e.section) for e in doc.elements]
    assert kinds == [("title", "SOP-7 Die change"), ("title", "SOP-7 Die change > Steps"),
                     ("list", "SOP-7 Die change > Steps"), ("table", "SOP-7 Die change > Steps")]
    assert doc.elements[2].text == "1. Stop the press.\n2. Lock out Q1."
    assert doc.elements[3].text == "Tool | Size\nWrench | 19 mm"
    assert doc.title() == "SOP-7 Die change"


def test_html_ignores_scripts_and_keeps_headings():
    html = b"<html><head><script>evil()</script></head><body><h1>Manual</h1><p>Grease <b>every</b> 500 h.</p>" \
           b"<h2>Alarms</h2><ul><li>A-117 oil hot</li></ul></body></html>"
    doc = parse("m.html", html)
    assert [e.text for e in doc.elements] == ["Manual", "Grease every 500 h.", "Alarms", "- A-117 oil hot"]
    assert "evil" not in doc.text
    assert doc.elements[3].section == "Manual > Alarms"


def test_docx_headings_paragraphs_tables():
    data = docx_bytes("Manual M-1", [("1 Lubrication", ["Grease bearings every 500 hours."])],
                      [["Part", "Interval"], ["Bearing", "500 h"]])
    doc = parse("m.docx", data)
    assert ("Grease bearings every 500 hours.", "text", "Manual M-1 > 1 Lubrication") in [
        (e.text, e.kind, e.section) for e in doc.elements]
    assert any(e.kind == "table" and "Bearing | 500 h" in e.text for e in doc.elements)


def test_pdf_text_layer_keeps_page_numbers():
    doc = parse("r.pdf", text_pdf([["Quality report QR-1", "Defect rate 3 percent."], ["Page two mentions torque."]]))
    assert doc.pages == 2 and doc.ocr_pages == []
    by_page = {e.page for e in doc.elements if "torque" in e.text}
    assert by_page == {2}


def test_scanned_pdf_and_image_need_ocr():
    import io

    from PIL import Image

    png = text_image(["Torque for M8 bolts is 25 Nm."])
    buf = io.BytesIO()
    Image.open(io.BytesIO(png)).save(buf, format="PDF")
    for name, data in (("scan.pdf", buf.getvalue()), ("scan.png", png)):
        doc = parse(name, data)
        assert doc.ocr_pages == [1], name
        assert "Torque for M8 bolts is 25 Nm" in doc.text, doc.text


@pytest.mark.parametrize(
    "name,data,exc",
    [
        ("virus.exe", b"MZ\x90\x00", UnsupportedFormat),
        ("noext", b"hello", UnsupportedFormat),
        ("fake.pdf", b"just some text", ContentMismatch),
        ("fake.docx", b"plain text", ContentMismatch),
        ("fake.txt", b"%PDF-1.4 binary\x00\x01", ContentMismatch),
        ("zip.docx", b"PK\x03\x04garbage", ContentMismatch),
        ("img.png", b"not an image at all", ContentMismatch),
    ],
)
def test_detection_refuses_wrong_or_unknown_types(name, data, exc):
    with pytest.raises(exc):
        detect_format(name, data)


@pytest.mark.parametrize("data", [b"%PDF-1.4\n1 0 obj garbage", b"%PDF-"])
def test_corrupt_pdf_is_a_parse_error(data):
    with pytest.raises(ParseError, match="PDF"):
        parse("broken.pdf", data)


def test_whitespace_only_text_has_nothing_to_extract():
    with pytest.raises(ParseError, match="no text"):
        parse("blank.txt", b"   \n\n  \t ")


def test_html_main_content_drops_navigation_and_footers_of_a_real_page():
    """A page of the Python documentation as Debian ships it (tests/data/html/python-json.html): Sphinx's
    navigation bars ("index | modules | next | previous"), sidebar and footer are not content."""
    from pathlib import Path

    data = (Path(__file__).parent.parent / "data" / "html" / "python-json.html").read_bytes()
    doc = parse("python-json.html", data)
    full = "\n".join(e.text for e in doc.elements)
    for boilerplate in ("Previous topic", "Next topic", "This Page", "Report a Bug", "Show Source", "Copyright",
                        "Quick search", "modules |", "Python »"):
        assert boilerplate not in full, boilerplate
    # the content stays, with its structure: headings, signatures with their defaults, code
    titles = [e.text for e in doc.elements if e.kind == "title"]
    assert "json — JSON encoder and decoder" in titles[0] and any("Basic Usage" in t for t in titles)
    assert "skipkeys=False" in full and "ensure_ascii=True" in full
    assert any(e.text.startswith(">>> import json\n") for e in doc.elements)


def test_docbook_navigation_tables_of_a_real_page_are_not_content():
    """A page of the PostgreSQL 15 manual as Debian ships it (tests/data/html/postgresql-runtime-config-autovacuum
    .html): DocBook puts "Prev | Up | Chapter 20. … | Home | Next" in layout tables above and below the content
    (trafilatura keeps them: they are tables); they are dropped, the parameter list stays whole."""
    from pathlib import Path

    data = (Path(__file__).parent.parent / "data" / "html" / "postgresql-runtime-config-autovacuum.html").read_bytes()
    doc = parse("runtime-config-autovacuum.html", data)
    full = "\n".join(e.text for e in doc.elements)
    assert "| Home |" not in full and "Prev | Up" not in full and "Prev |" not in full
    assert doc.elements[0].kind == "title" and doc.elements[0].text == "20.10. Automatic Vacuuming"
    texts = [e.text for e in doc.elements]
    i = texts.index("autovacuum_naptime ( integer )")  # the definition list: term, then its description
    assert "The default is one minute ( 1min )." in texts[i + 1]


def test_html_nav_bar_and_footer_of_a_plain_page_are_dropped_and_inline_code_keeps_the_sentence():
    html = b"""<html><head><title>Spindle setup | ACME Docs</title></head><body>
<div class="topbar"><a href="/">Home</a> | <a href="p.html">Prev</a> | <a href="n.html">Next</a></div>
<div class="content"><h1>Configuring the spindle</h1>
<p>The spindle controller accepts a maximum speed of 12000 rpm. Set the parameter MAX_RPM before the first run,
otherwise the controller falls back to its default of 6000 rpm and logs warning W-212 at every start.</p>
<h2>Parameters</h2>
<table><tr><th>Name</th><th>Default</th><th>Meaning</th></tr>
<tr><td>MAX_RPM</td><td>6000</td><td>Upper speed limit</td></tr>
<tr><td>RAMP_MS</td><td>800</td><td>Acceleration ramp in milliseconds</td></tr></table>
<p>After changing a parameter, restart the controller with <code>spindlectl restart</code> and verify the reading
on the operator panel. The ramp must not be shorter than 200 ms on machines built before 2019.</p>
<pre>spindlectl set MAX_RPM 12000
spindlectl restart</pre>
</div>
<div class="footer">Spindle setup | Home | Next &copy; 2024 ACME Corp. All rights reserved.</div>
</body></html>"""
    doc = parse("spindle.html", html)
    full = "\n".join(e.text for e in doc.elements)
    assert "Home" not in full and "Prev" not in full and "All rights reserved" not in full
    assert [e.text for e in doc.elements if e.kind == "title"] == ["Configuring the spindle", "Parameters"]
    assert any(e.kind == "table" and "MAX_RPM | 6000 | Upper speed limit" in e.text for e in doc.elements)
    assert any("restart the controller with spindlectl restart and verify the reading" in e.text
               for e in doc.elements)
    assert any(e.text == "spindlectl set MAX_RPM 12000\nspindlectl restart" for e in doc.elements)
