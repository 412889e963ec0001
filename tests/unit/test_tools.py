import pytest

from agents import skills
from agents.tools import calculate, convert, statistics, tool_schema
from core.errors import Forbidden, InvalidInput
from retrieval.search import Caller


@pytest.mark.parametrize("expr,value", [("(12+8)*3/2", 30.0), ("2^10", 1024.0), ("mean([2, 4, 9])", 5.0),
                                        ("sqrt(16) + abs(-2)", 6.0), ("7 // 2 + 7 % 2", 4.0)])
def test_calculate(expr, value):
    assert calculate(expr) == pytest.approx(value)


@pytest.mark.parametrize("expr", ["__import__('os').system('id')", "open('/etc/passwd')", "(1).__class__",
                                  "9**9**9", "1/0", "x + 1", "lambda: 1", "[i for i in range(9)]"])
def test_calculate_refuses_anything_but_arithmetic(expr):
    with pytest.raises(InvalidInput):
        calculate(expr)


def test_convert_and_statistics():
    assert convert(2, "bar", "psi") == pytest.approx(29.0075, rel=1e-4)
    assert convert(100, "°C", "F") == pytest.approx(212)
    assert convert(25, "Nm", "lbf*ft") == pytest.approx(18.439, rel=1e-3)
    with pytest.raises(InvalidInput):
        convert(1, "bar", "mm")
    assert statistics([1, 2, 3, 4])["median"] == 2.5


def test_tool_schema_comes_from_types_and_docstring():
    s = tool_schema(convert)["function"]
    assert s["name"] == "convert" and s["description"].startswith("Convert a value")
    assert s["parameters"]["properties"]["value"] == {"type": "number"}
    assert s["parameters"]["required"] == ["value", "from_unit", "to_unit"]
    assert [t["function"]["name"] for t in skills.REGISTRY["calculations"].schema()] == [
        "calculate", "convert", "statistics"]


def test_role_based_skill_access():
    assert skills.available("viewer")[:3] == ["document_analysis", "procedure_lookup", "calculations"]
    assert "sap_material_stock" in skills.available("viewer") and "sap_cost_centers" not in skills.available("viewer")
    assert "report_generation" in skills.available("operator")
    with pytest.raises(Forbidden):
        skills.invoke("report_generation", None, Caller("viewer"), "report on porosity")
    with pytest.raises(InvalidInput):
        skills.invoke("format_disk", None, Caller("admin"), "x")


def test_complexity_raises_the_starting_tier():
    from agents.orchestrator import complexity, pick_tier

    assert complexity("What does alarm A-117 mean?") == "SIMPLE"
    assert complexity("Why are so many parts rejected at final inspection?") == "MODERATE"
    long_q = ("Why did the defect rate rise on line 2 and should we stop the line? What is the impact on the "
              "delivery plan for this week and next week if we do?")
    assert complexity(long_q) == "COMPLEX"
    assert [pick_tier("LIGHT", lvl) for lvl in ("SIMPLE", "MODERATE", "COMPLEX")] == ["LIGHT", "STANDARD", "HEAVY"]
    assert pick_tier("STANDARD", "SIMPLE") == "STANDARD"


@pytest.mark.parametrize("question,expression,value", [
    ("Calculate the difference between the defect rates 6.3 and 1.2 percent", "6.3 - 1.2", 5.1),
    ("What is the sum of 120 and 80 parts?", "120 + 80", 200.0),
    ("What is the ratio of 25 to 20 minutes?", "25 / 20", 1.25),
    ("How much is 15 percent of 3200 parts?", "15 / 100 * 3200", 480.0),
    ("What is the scrap rate for 24 defects out of 400 parts?", "24 / 400 * 100", 6.0),
])
def test_arithmetic_asked_in_words_is_calculated_and_shows_its_expression(question, expression, value):
    assert skills.select_skill("data_analyst", question) == "calculations"
    res = skills.invoke("calculations", None, Caller("viewer"), question)
    assert res.data["args"] == [expression] and res.data["result"] == pytest.approx(value)
    assert expression in res.text


def test_words_without_arithmetic_are_not_a_calculation():
    assert skills.select_skill("data_analyst", "How many parts out of lot 2026-125 were inspected?") is None
    with pytest.raises(InvalidInput):
        skills.invoke("calculations", None, Caller("viewer"), "Which lots out of the quarter were re-inspected?")


def test_the_task_a_request_opens_with_picks_the_specialist():
    from agents.router import route
    from core.embedding import get_embedder

    e = get_embedder()
    # The topic words point at the Quality Inspector / Procedure Expert; the task decides.
    r = route("Summarise the weld porosity quality report QR-2026-044", e)
    assert r.specialist == "document_analyst" and "task intent" in r.reason
    assert route("Compare the lockout SOP and the die change SOP", e).specialist == "document_analyst"
    assert route("Calculate the difference between the defect rates 6.3 and 1.2 percent", e).specialist == \
        "data_analyst"
    # Without a task verb up front the topic decides as before.
    assert route("What caused the weld porosity on bracket BR-220?", e).specialist == "quality_inspector"


def test_extractive_answers_do_not_quote_headings():
    from core.llm.extractive import SOURCES_END, SOURCES_START, compose

    # The title (in the source header) and a short section heading are labels inside the chunk text.
    prompt = (f"{SOURCES_START}\n[1] Weld porosity on bracket BR-220, p. 2, Corrective actions\n"
              "Weld porosity on bracket BR-220\nCorrective actions\n"
              "The gas hose on robot W2 was replaced and the shielding gas flow raised to 16 l/min.\n"
              f"{SOURCES_END}")
    out = compose([{"role": "system", "content": prompt},
                   {"role": "user", "content": "What corrective actions were taken for the weld porosity on BR-220?"}])
    assert "gas hose on robot W2 was replaced" in out
    assert "- Corrective actions" not in out and "- Weld porosity on bracket BR-220 [" not in out
