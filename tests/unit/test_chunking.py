from ingestion.chunking import MAX_TOKENS, chunk_elements, count_tokens
from ingestion.parsing import parse


def test_small_sections_stay_together_and_keep_metadata():
    md = b"# Manual\n\n## Oil\n\nUse HLP 46.\n\n## Filter\n\nChange every 2000 h.\n"
    chunks = chunk_elements(parse("m.md", md).elements, "Manual")
    assert len(chunks) == 1
    assert chunks[0].text.startswith("Manual\nOil\nUse HLP 46.")
    assert chunks[0].metadata["document_title"] == "Manual"


def test_long_sections_split_under_model_window_with_overlap():
    body = " ".join(f"The operator verifies torque value {i} before release." for i in range(150))
    md = f"# Big\n\n{body}\n\n## Next\n\nShort.".encode()
    chunks = chunk_elements(parse("b.md", md).elements)
    assert len(chunks) > 3
    assert all(c.token_count <= MAX_TOKENS for c in chunks)
    assert all(count_tokens([c.text])[0] <= MAX_TOKENS + 5 for c in chunks)
    # Sentence overlap: the end of one chunk opens the next.
    assert chunks[0].text.splitlines()[-1] in chunks[1].text.splitlines()[:4]
    assert chunks[1].text.splitlines()[0] in chunks[0].text.splitlines()
    assert chunks[-1].section == "Big > Next" and chunks[-1].text == "Next\nShort."
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_pages_recorded():
    from tests.builders import text_pdf

    doc = parse("r.pdf", text_pdf([["Page one text about presses."], ["Page two text about robots."]]))
    chunks = chunk_elements(doc.elements)
    assert chunks[0].page == 1
    assert chunks[0].metadata.get("pages") == [1, 2]
