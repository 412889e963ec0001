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
    assert skills.available("viewer") == ["document_analysis", "procedure_lookup", "calculations"]
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
