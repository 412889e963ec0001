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
