"""Document parsing: detect the real format, then turn bytes into ordered, structured elements
(title / text / list / table) carrying page numbers and section paths for citations.

Why not `unstructured` partitioners: in 0.27 every text partitioner (txt, md, html, docx) calls
spaCy's `en_core_web_sm` for title/narrative heuristics and downloads it from GitHub on first
use; the model is not published on PyPI by its authors, so an air-gapped site cannot have it.
The libraries unstructured itself wraps (BeautifulSoup/lxml, python-docx, pypdf) do the work here,
with structure taken from the markup, and OCR through pytesseract (Debian `tesseract-ocr`).

Over 400 lines on purpose: one reader per format (text, Markdown, HTML, DOCX, PDF with OCR fallback,
images) plus format detection, each small and sharing the element/section helpers at the top.
"""

from __future__ import annotations

import io
import os
import re
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from PIL import Image

from core.errors import InvalidInput

TEXT_FORMATS = {"txt", "md", "html"}
EXTENSIONS = {
    ".txt": "txt", ".text": "txt", ".log": "txt",
    ".md": "md", ".markdown": "md",
    ".html": "html", ".htm": "html",
    ".docx": "docx",
    ".pdf": "pdf",
    ".png": "image", ".jpg": "image", ".jpeg": "image", ".tif": "image", ".tiff": "image", ".bmp": "image",
}
MIME = {
    "txt": "text/plain", "md": "text/markdown", "html": "text/html", "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "image": "image/*",
}
# A PDF page with less extractable text than this is treated as a scan and OCR'd.
OCR_MIN_CHARS = 25
OCR_DPI = 200


class UnsupportedFormat(InvalidInput):
    """Not a file type the platform reads (415)."""

    code = "unsupported_type"
    status_code = 415


class ContentMismatch(UnsupportedFormat):
    """The bytes are not what the file name says they are (415)."""

    code = "content_type_mismatch"


class ParseError(InvalidInput):
    """A supported file whose content could not be read (422, as every invalid input)."""

    code = "parse_failed"


@dataclass
class Element:
    text: str
    kind: str = "text"  # title | text | list | table
    page: int | None = None
    section: str | None = None
    level: int = 0
    ocr: bool = False


@dataclass
class ParsedDocument:
    format: str
    elements: list[Element] = field(default_factory=list)
    pages: int | None = None
    ocr_pages: list[int] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(e.text for e in self.elements)

    def title(self) -> str | None:
        for e in self.elements:
            if e.kind == "title" and e.text.strip():
                return e.text.strip()[:200]
        return None


# --------------------------------------------------------------------------- detection


def _sniff(head: bytes) -> str | None:
    h = head.lstrip()[:8]
    if head[:1024].find(b"%PDF-") != -1 and head[:1024].lstrip().startswith(b"%PDF-"):
        return "pdf"
    if h.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8\xff"):
        return "image"
    if head.startswith((b"II*\x00", b"MM\x00*")) or head.startswith(b"BM"):
        return "image"
    if b"\x00" in head[:4096] and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "binary"
    return "text"


def detect_format(filename: str, data: bytes) -> str:
    """The format the bytes really are, checked against the file name's extension."""
    ext = os.path.splitext(filename.lower())[1]
    declared = EXTENSIONS.get(ext)
    if declared is None:
        raise UnsupportedFormat(
            f"unsupported file type {ext or '(no extension)'!r}; supported: "
            + ", ".join(sorted(EXTENSIONS)),
        )
    sniffed = _sniff(data[:8192])
    if declared == "docx":
        ok = sniffed == "zip" and _is_docx(data)
    elif declared in TEXT_FORMATS:
        ok = sniffed == "text"
    else:
        ok = sniffed == declared
    if not ok:
        what = {"zip": "a ZIP archive", "binary": "binary data", "text": "text", "pdf": "a PDF",
                "image": "an image"}[cast(str, sniffed)]
        raise ContentMismatch(f"{filename!r} has extension {ext} but its content is {what}")
    return declared


def _is_docx(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return "word/document.xml" in z.namelist()
    except zipfile.BadZipFile:
        return False


def decode_text(data: bytes) -> str:
    for enc in ("utf-8-sig", "utf-16") if data.startswith((b"\xff\xfe", b"\xfe\xff")) else ("utf-8-sig",):
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    return data.decode("cp1252", errors="replace")


# --------------------------------------------------------------------------- structure helpers

_LIST_ITEM = re.compile(r"^\s*(?:[-*•▪◦‣]|\(?\d{1,3}[.)]|\(?[a-z][.)])\s+\S")
_NUMBERED_HEADING = re.compile(r"^(?:\d{1,2}(?:\.\d{1,2}){0,3}\.?|[A-Z]\.|Section \d+|Chapter \d+|Appendix [A-Z])\s+\S")


def looks_like_heading(line: str) -> bool:
    s = line.strip()
    if not s or len(s) > 90 or s.endswith((".", ",", ";", ":")) and not s.endswith("..."):
        return False
    if _LIST_ITEM.match(s) and not _NUMBERED_HEADING.match(s):
        return False
    words = re.findall(r"[A-Za-zÀ-ž][\w'-]*", s)
    if not words or len(words) > 12:
        return False
    if _NUMBERED_HEADING.match(s) and len(words) <= 10:
        return True
    letters = [c for c in s if c.isalpha()]
    if letters and sum(c.isupper() for c in letters) / len(letters) > 0.8 and len(letters) >= 3:
        return True
    caps = sum(w[0].isupper() for w in words if len(w) > 3)
    long_words = sum(1 for w in words if len(w) > 3)
    return long_words > 0 and caps == long_words and len(words) <= 8


class _Sections:
    def __init__(self) -> None:
        self.stack: list[tuple[int, str]] = []

    def push(self, level: int, title: str) -> None:
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        self.stack.append((level, title.strip()[:120]))

    @property
    def path(self) -> str | None:
        return " > ".join(t for _, t in self.stack[-3:]) or None


def _heading_level(line: str) -> int:
    m = re.match(r"^(\d{1,2}(?:\.\d{1,2})*)", line.strip())
    return min(6, m.group(1).rstrip(".").count(".") + 1) if m else 1


def _plain_blocks(text: str, page: int | None, sections: _Sections, out: list[Element], ocr: bool = False) -> None:
    """Paragraph/list/heading structure from plain text (txt files, PDF pages, OCR output)."""
    lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    para: list[str] = []
    kind = "text"

    def flush() -> None:
        nonlocal para, kind
        if para:
            body = "\n".join(para) if kind == "list" else " ".join(p.strip() for p in para)
            out.append(Element(body.strip(), kind, page, sections.path, ocr=ocr))
        para, kind = [], "text"

    for ln in lines:
        s = ln.strip()
        if not s:
            flush()
            continue
        if looks_like_heading(s) and (not para or kind == "list" or len(para) == 0):
            flush()
            level = _heading_level(s)
            sections.push(level, s)
            out.append(Element(s, "title", page, sections.path, level, ocr=ocr))
            continue
        if _LIST_ITEM.match(s):
            if kind != "list":
                flush()
                kind = "list"
            para.append(s)
            continue
        if kind == "list" and para and ln.startswith((" ", "\t")):
            para[-1] += " " + s  # wrapped list item
            continue
        if kind == "list":
            flush()
        para.append(s)
    flush()


# --------------------------------------------------------------------------- formats


def _parse_txt(data: bytes) -> ParsedDocument:
    out: list[Element]
    sections, out = _Sections(), []
    pages = decode_text(data).split("\f")
    for i, page_text in enumerate(pages, start=1):
        _plain_blocks(page_text, i if len(pages) > 1 else None, sections, out)
    return ParsedDocument("txt", out, pages=len(pages) if len(pages) > 1 else None)


_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_MD_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")


def _md_inline(s: str) -> str:
    s = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", s)
    s = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", s)
    s = re.sub(r"(\*\*|__)(.+?)\1", r"\2", s)
    s = re.sub(r"(?<![\w*])[*_](\S.*?\S|\S)[*_](?![\w*])", r"\1", s)
    return s.replace("`", "")


def _parse_md(data: bytes) -> ParsedDocument:
    sections, out = _Sections(), []
    lines = decode_text(data).replace("\r\n", "\n").split("\n")
    buf: list[str] = []
    kind = "text"
    in_code = False

    def flush() -> None:
        nonlocal buf, kind
        if buf:
            sep = "\n" if kind in ("list", "table") or in_code else " "
            body = sep.join(b.strip() if kind == "text" else b for b in buf).strip()
            if body:
                out.append(Element(body, kind, None, sections.path))
        buf, kind = [], "text"

    for ln in lines:
        if ln.strip().startswith(("```", "~~~")):
            if in_code:
                flush()
                in_code = False
            else:
                flush()
                in_code = True
            continue
        if in_code:
            buf.append(ln)
            continue
        m = _MD_HEADING.match(ln)
        if m:
            flush()
            level, title = len(m.group(1)), _md_inline(m.group(2))
            sections.push(level, title)
            out.append(Element(title, "title", None, sections.path, level))
            continue
        s = ln.strip()
        if not s:
            flush()
            continue
        if s.startswith("|") or (kind == "table" and "|" in s):
            if _MD_TABLE_SEP.match(s):
                continue
            if kind != "table":
                flush()
                kind = "table"
            cells = [_md_inline(c.strip()) for c in s.strip("|").split("|")]
            buf.append(" | ".join(cells))
            continue
        if _LIST_ITEM.match(s):
            if kind != "list":
                flush()
                kind = "list"
            buf.append(_md_inline(s))
            continue
        if kind == "list" and ln.startswith((" ", "\t")) and buf:
            buf[-1] += " " + _md_inline(s)
            continue
        if kind in ("list", "table"):
            flush()
        buf.append(_md_inline(s.lstrip("> ")))
    flush()
    return ParsedDocument("md", out)


_BLOCK_TAGS = {"p", "pre", "blockquote", "dt", "dd", "figcaption", "caption", "address"}
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_SKIP_TAGS = {"script", "style", "noscript", "template", "svg", "head", "nav", "footer", "aside", "form", "button"}


def main_content(html: str) -> str:
    """The page's main content as HTML, by trafilatura (made for this: navigation bars, headers, footers,
    sidebars and "Prev | Next" links out; headings, lists, tables and code kept). A page where it finds no
    main content, or flattens a short page's structure into one paragraph (its fallback for small pages), is
    kept whole: the structural walk below still skips nav/footer/aside elements and ARIA landmarks that are
    not content."""
    import trafilatura

    out = trafilatura.extract(html, output_format="html", include_tables=True, include_formatting=True,
                              include_links=False, include_comments=False, include_images=False,
                              favor_recall=True, fast=True)
    if not out or not out.strip():
        return html
    if _HEADING_TAG.search(html) and not _HEADING_TAG.search(out):
        return html
    # Its output marks inline code as <pre>, which an HTML parser takes as a block that ends the paragraph
    # (a sentence split in two around a command): single-line ones become <code> again.
    return _INLINE_PRE.sub(r"<code>\1</code>", out)


_HEADING_TAG = re.compile(r"<h[1-6][\s>]", re.IGNORECASE)
_INLINE_PRE = re.compile(r"<pre>([^<\n]{1,200})</pre>")


_NAV_WORDS = {"prev", "previous", "next", "up", "home", "contents", "index", "search", "top", "back"}


def _is_nav_row(cells: list[str]) -> bool:
    """A table row of navigation links: at least two cells that are navigation words, every cell short."""
    words = [c.strip().lower().rstrip(" »«›‹→←") for c in cells if c.strip()]
    return sum(w in _NAV_WORDS for w in words) >= 2 and all(len(w.split()) <= 8 for w in words)


# ARIA landmarks that are never the document's content.
_SKIP_ROLES = {"navigation", "banner", "contentinfo", "search", "complementary", "menu", "menubar"}


def _parse_html(data: bytes) -> ParsedDocument:
    from bs4 import BeautifulSoup, NavigableString, Tag

    soup = BeautifulSoup(main_content(decode_text(data)), "lxml")
    sections, out = _Sections(), []
    root = soup.body or soup

    def text_of(t: Tag) -> str:
        return re.sub(r"\s+", " ", t.get_text(" ", strip=True)).replace("¶", "").strip()

    def walk(node: Tag) -> None:
        loose: list[str] = []

        def flush_loose() -> None:
            s = re.sub(r"\s+", " ", " ".join(loose)).strip()
            if s:
                out.append(Element(s, "text", None, sections.path))
            loose.clear()

        for child in node.children:
            if isinstance(child, NavigableString):
                if child.__class__.__name__ in ("Comment", "Doctype", "Declaration", "ProcessingInstruction"):
                    continue
                loose.append(str(child))
                continue
            if not isinstance(child, Tag) or child.name in _SKIP_TAGS or child.get("role") in _SKIP_ROLES:
                continue
            name = child.name
            if name in _HEADINGS:
                flush_loose()
                t = text_of(child)
                if t:
                    sections.push(_HEADINGS[name], t)
                    out.append(Element(t, "title", None, sections.path, _HEADINGS[name]))
            elif name in ("ul", "ol"):
                flush_loose()
                items = [text_of(li) for li in child.find_all("li", recursive=False)]
                items = [f"- {i}" for i in items if i]
                if items:
                    out.append(Element("\n".join(items), "list", None, sections.path))
            elif name == "table":
                flush_loose()
                rows, nav = [], False
                for tr in child.find_all("tr"):
                    cells = [text_of(c) for c in tr.find_all(["th", "td"])]
                    nav = nav or _is_nav_row(cells)
                    if any(cells):
                        rows.append(" | ".join(cells))
                # A layout table holding a "Prev | Up | Home | Next" bar (DocBook's navheader/navfooter, as in
                # the PostgreSQL manual) is navigation, not content.
                if rows and not (nav and len(rows) <= 3):
                    out.append(Element("\n".join(rows), "table", None, sections.path))
            elif name in _BLOCK_TAGS:
                flush_loose()
                # Code keeps its lines (trafilatura hands code blocks over as multi-line blockquotes).
                code = name == "pre" or (name == "blockquote" and "\n" in child.get_text().strip())
                t = child.get_text("\n" if code else " ", strip=not code).strip()
                t = t if code else re.sub(r"\s+", " ", t).replace("¶", "").strip()
                if t:
                    out.append(Element(t, "text", None, sections.path))
            elif name in ("br",):
                loose.append(" ")
            elif name in ("span", "a", "b", "strong", "i", "em", "code", "sup", "sub", "abbr", "kbd", "small", "u",
                          "mark", "cite", "q", "var", "samp", "time", "img"):
                loose.append(child.get_text(" ", strip=False) if name != "img" else cast(str, child.get("alt") or ""))
            else:
                flush_loose()
                walk(child)
        flush_loose()

    walk(root)
    return ParsedDocument("html", out)


def _parse_docx(data: bytes) -> ParsedDocument:
    import docx
    import docx.text.paragraph
    from docx.oxml.ns import qn

    try:
        d = docx.Document(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - python-docx raises many types for a broken package
        raise ParseError(f"corrupt DOCX: {exc}") from None
    sections, out = _Sections(), []
    page = 1
    body = d.element.body
    for block in body.iterchildren():
        if block.tag == qn("w:p"):
            breaks = len(block.findall(".//" + qn("w:lastRenderedPageBreak"))) + sum(
                1 for br in block.findall(".//" + qn("w:br")) if br.get(qn("w:type")) == "page"
            )
            page += breaks
            para = docx.text.paragraph.Paragraph(block, d)
            text = para.text.strip()
            if not text:
                continue
            style = (para.style.name if para.style is not None else "") or ""
            if style == "Title" or style.startswith("Heading"):
                m = re.search(r"(\d)", style)
                level = int(m.group(1)) if m and style.startswith("Heading") else 0
                sections.push(level, text)
                out.append(Element(text, "title", page, sections.path, level))
            elif "List" in style or block.find(".//" + qn("w:numPr")) is not None:
                if out and out[-1].kind == "list" and out[-1].section == sections.path:
                    out[-1].text += "\n- " + text
                else:
                    out.append(Element("- " + text, "list", page, sections.path))
            else:
                out.append(Element(text, "text", page, sections.path))
        elif block.tag == qn("w:tbl"):
            table = docx.table.Table(block, d)
            rows = []
            for row in table.rows:
                cells: list[str] = []
                for c in row.cells:
                    t = c.text.strip()
                    if not cells or cells[-1] != t:  # merged cells repeat
                        cells.append(t)
                if any(cells):
                    rows.append(" | ".join(cells))
            if rows:
                out.append(Element("\n".join(rows), "table", page, sections.path))
    return ParsedDocument("docx", out, pages=page if page > 1 else None)


class OcrBudgetExceeded(ParseError):
    code = "ocr_budget_exceeded"


class OcrBudget:
    """Per-document OCR limits (EAP_OCR_MAX_PAGES, EAP_OCR_TIMEOUT_S): a document with more scanned
    pages, or whose pages take longer in total, fails alone with the reason instead of holding a run."""

    def __init__(self, max_pages: int | None = None, timeout_s: float | None = None) -> None:
        self.max_pages, self.timeout_s = max_pages, timeout_s
        self.deadline = time.monotonic() + timeout_s if timeout_s else None
        self.pages = 0

    def check_pages(self, scanned: int) -> None:
        """Refuse up front (before any OCR time is spent) a document with too many scanned pages."""
        if self.max_pages is not None and scanned > self.max_pages:
            raise OcrBudgetExceeded(f"OCR budget exceeded: {scanned} scanned pages, at most {self.max_pages} per "
                                    "document (EAP_OCR_MAX_PAGES)")

    def take_page(self) -> float | None:
        """Account for one more page; the seconds it may take (None: no limit)."""
        self.pages += 1
        if self.max_pages is not None and self.pages > self.max_pages:
            raise OcrBudgetExceeded(f"OCR budget exceeded: more than {self.max_pages} scanned pages "
                                    "(EAP_OCR_MAX_PAGES)")
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.timed_out()
        return left

    def timed_out(self) -> OcrBudgetExceeded:
        return OcrBudgetExceeded(f"OCR time budget exceeded: {self.timeout_s:g} s per document (EAP_OCR_TIMEOUT_S), "
                                 f"reached on scanned page {self.pages}")


def ocr_image(image: Image.Image, budget: OcrBudget | None = None) -> str:
    import pytesseract

    # tesseract's OpenMP threading makes a page 10x slower on 2 cores.
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    left = budget.take_page() if budget is not None else None
    try:
        # timeout: pytesseract kills tesseract and raises RuntimeError when the page runs out of time.
        return cast(str, pytesseract.image_to_string(image.convert("L"), lang="eng", timeout=left or 0))
    except pytesseract.TesseractNotFoundError:
        raise ParseError("OCR needs the tesseract-ocr package (apt-get install tesseract-ocr)") from None
    except RuntimeError as exc:
        if budget is not None and "timeout" in str(exc).lower():
            raise budget.timed_out() from None
        raise


def _parse_pdf(data: bytes, budget: OcrBudget | None = None) -> ParsedDocument:
    import pypdf

    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                if not reader.decrypt(""):
                    raise ParseError("encrypted PDF: remove the password before uploading")
            except Exception:  # noqa: BLE001
                raise ParseError("encrypted PDF: remove the password before uploading") from None
        n_pages = len(reader.pages)
    except ParseError:
        raise
    except Exception as exc:  # noqa: BLE001 - pypdf raises many types for broken files
        raise ParseError(f"corrupt PDF: {str(exc) or type(exc).__name__}") from None
    if n_pages == 0:
        raise ParseError("PDF has no pages")
    out: list[Element]
    sections, out, ocr_pages = _Sections(), [], []
    pdfium_doc = None
    try:
        texts = []
        for i in range(n_pages):
            try:
                texts.append(reader.pages[i].extract_text() or "")
            except Exception:  # noqa: BLE001 - one unreadable page should not lose the others
                texts.append("")
        if budget is not None:
            budget.check_pages(sum(1 for t in texts if len(t.strip()) < OCR_MIN_CHARS))
        for i, text in enumerate(texts):
            ocr = False
            if len(text.strip()) < OCR_MIN_CHARS:
                if pdfium_doc is None:
                    import pypdfium2

                    try:
                        pdfium_doc = pypdfium2.PdfDocument(data)
                    except Exception as exc:  # noqa: BLE001
                        raise ParseError(f"corrupt PDF: {exc}") from None
                image = pdfium_doc[i].render(scale=OCR_DPI / 72).to_pil()
                ocr_text = ocr_image(image, budget)
                if len(ocr_text.strip()) > len(text.strip()):
                    text, ocr = ocr_text, True
                    ocr_pages.append(i + 1)
            _plain_blocks(text, i + 1, sections, out, ocr=ocr)
    finally:
        if pdfium_doc is not None:
            pdfium_doc.close()
    return ParsedDocument("pdf", out, pages=n_pages, ocr_pages=ocr_pages)


def _parse_image(data: bytes, budget: OcrBudget | None = None) -> ParsedDocument:
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise ParseError(f"corrupt image: {exc}") from None
    out: list[Element]
    sections, out = _Sections(), []
    _plain_blocks(ocr_image(img, budget), 1, sections, out, ocr=True)
    return ParsedDocument("image", out, pages=1, ocr_pages=[1])


_PARSERS: dict[str, Callable[..., ParsedDocument]] = {
    "txt": _parse_txt, "md": _parse_md, "html": _parse_html, "docx": _parse_docx, "pdf": _parse_pdf,
    "image": _parse_image}


def parse(filename: str, data: bytes, *, ocr_max_pages: int | None = None,
          ocr_timeout_s: float | None = None) -> ParsedDocument:
    fmt = detect_format(filename, data)
    if fmt in ("pdf", "image"):
        doc = _PARSERS[fmt](data, OcrBudget(ocr_max_pages, ocr_timeout_s))
    else:
        doc = _PARSERS[fmt](data)
    doc.elements = [e for e in doc.elements if e.text.strip()]
    if not doc.elements:
        raise ParseError("no text could be extracted" + (" (OCR found nothing either)" if doc.ocr_pages else ""))
    return doc
