"""Tools are small typed functions whose docstring is their description; their OpenAI tool schema
is generated from the signature. `calculate`, `convert` and `statistics` are the calculation
skill's tools: arithmetic is evaluated on a whitelisted AST, never with eval()."""

from __future__ import annotations

import ast
import inspect
import math
import operator
import statistics as stats
from collections.abc import Callable
from typing import Any, get_type_hints

from pydantic import TypeAdapter

from core.errors import InvalidInput

_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UN: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
MAX_EXPRESSION_CHARS = 500
MAX_NODES = 200  # AST nodes: bounds list sizes and the number of operations
# Every operand and every intermediate result stays below 10^MAX_DIGITS, checked BEFORE a power is
# computed (an exact integer power such as (9^99)^99^99 would otherwise hold the interpreter for
# minutes). 300 keeps every result representable as a float (max ~1.8e308).
MAX_DIGITS = 300
MAX_MAGNITUDE = 10.0 ** MAX_DIGITS
MAX_ROUND_DIGITS = 15
MAX_VALUES = 1000  # statistics over at most this many numbers


class CalculationRefused(InvalidInput):
    """The expression is arithmetic but outside the calculator's bounds (size, magnitude)."""

    code = "calculation_refused"


def _bounded(value: Any) -> Any:
    if isinstance(value, list):
        return [_bounded(v) for v in value]
    if isinstance(value, complex):
        raise InvalidInput("the result is not a real number", code="calculation_error")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculationRefused("the result is too large", details={"max_digits": MAX_DIGITS})
    if abs(value) >= MAX_MAGNITUDE:  # exact for ints of any size
        raise CalculationRefused(f"the result has more than {MAX_DIGITS} digits",
                                 details={"max_digits": MAX_DIGITS})
    return value


def _pow(base: Any, exp: Any) -> Any:
    # Estimate log10 of the result first: |base|^exp has exp*log10|base| digits.
    if isinstance(base, list) or isinstance(exp, list):
        raise InvalidInput("cannot raise a list to a power", code="calculation_error")
    if base != 0 and abs(base) != 1 and exp * math.log10(abs(base)) > MAX_DIGITS:
        raise CalculationRefused(f"the result would have more than {MAX_DIGITS} digits",
                                 details={"max_digits": MAX_DIGITS})
    if base == 0 and exp < 0:
        raise ZeroDivisionError("0 cannot be raised to a negative power")
    return base ** exp


def _round(value: Any, ndigits: Any = None) -> Any:
    if ndigits is not None and (not isinstance(ndigits, int) or abs(ndigits) > MAX_ROUND_DIGITS):
        raise InvalidInput(f"round() takes at most {MAX_ROUND_DIGITS} digits", code="calculation_error")
    return round(value) if ndigits is None else round(value, ndigits)


_FUNCS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt, "abs": abs, "round": _round, "min": min, "max": max, "sum": sum,
    "mean": stats.fmean, "median": stats.median, "stdev": stats.stdev}


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return _bounded(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            return _bounded(_pow(left, right))
        return _bounded(_BIN[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UN:
        return _bounded(_UN[type(node.op)](_eval(node.operand)))
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_eval(e) for e in node.elts]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS and not node.keywords:
        return _bounded(_FUNCS[node.func.id](*[_eval(a) for a in node.args]))
    raise InvalidInput(f"unsupported expression element: {type(node).__name__}", code="calculation_error")


def calculate(expression: str) -> float:
    """Evaluate an arithmetic expression (+ - * / // % **, parentheses, sqrt, abs, round, min, max, sum,
    mean, median, stdev)."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculationRefused(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters",
                                 details={"max_chars": MAX_EXPRESSION_CHARS})
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise InvalidInput(f"cannot calculate {expression!r}: {exc.__class__.__name__}",
                           code="calculation_error") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise CalculationRefused(f"the expression has more than {MAX_NODES} elements",
                                 details={"max_nodes": MAX_NODES})
    try:
        value = _eval(tree)
        if isinstance(value, list):
            raise InvalidInput("the expression is a list, not a number", code="calculation_error")
        return float(value)
    except (ZeroDivisionError, TypeError, ValueError, OverflowError, RecursionError,
            stats.StatisticsError) as exc:
        raise InvalidInput(f"cannot calculate {expression!r}: {exc}", code="calculation_error") from None


def _finite(value: float, what: str) -> float:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or abs(value) >= MAX_MAGNITUDE:
        raise CalculationRefused(f"{what} is not a finite number below 1e{MAX_DIGITS}",
                                 details={"max_digits": MAX_DIGITS})
    return float(value)


# Linear units: factor to the base unit of their dimension.
_UNITS: dict[str, tuple[str, float]] = {
    "mm": ("length", 0.001), "cm": ("length", 0.01), "m": ("length", 1.0), "in": ("length", 0.0254),
    "ft": ("length", 0.3048), "bar": ("pressure", 1e5), "psi": ("pressure", 6894.757), "mpa": ("pressure", 1e6),
    "kpa": ("pressure", 1e3), "pa": ("pressure", 1.0), "nm": ("torque", 1.0), "lbf·ft": ("torque", 1.355818),
    "lbf*ft": ("torque", 1.355818), "ft-lb": ("torque", 1.355818), "kg": ("mass", 1.0), "g": ("mass", 0.001),
    "lb": ("mass", 0.45359237), "l": ("volume", 1.0), "ml": ("volume", 0.001), "gal": ("volume", 3.785411784),
    "l/min": ("flow", 1.0), "gal/min": ("flow", 3.785411784), "h": ("time", 3600.0), "min": ("time", 60.0),
    "s": ("time", 1.0),
}


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """Convert a value between units (length, pressure, torque, mass, volume, flow, time, °C/°F/K)."""
    value = _finite(value, "the value")
    f, t = from_unit.strip().lower(), to_unit.strip().lower()
    temps = {"c": "c", "°c": "c", "f": "f", "°f": "f", "k": "k"}
    if f in temps and t in temps:
        c = {"c": value, "f": (value - 32) * 5 / 9, "k": value - 273.15}[temps[f]]
        return _finite({"c": c, "f": c * 9 / 5 + 32, "k": c + 273.15}[temps[t]], "the result")
    if f not in _UNITS or t not in _UNITS:
        raise InvalidInput(f"unknown unit {f if f not in _UNITS else t!r}", code="calculation_error")
    if _UNITS[f][0] != _UNITS[t][0]:
        raise InvalidInput(f"cannot convert {_UNITS[f][0]} to {_UNITS[t][0]}", code="calculation_error")
    return _finite(value * _UNITS[f][1] / _UNITS[t][1], "the result")


def statistics(values: list[float]) -> dict[str, float]:
    """Count, mean, median, standard deviation, min and max of a list of numbers."""
    if not values:
        raise InvalidInput("no values", code="calculation_error")
    if len(values) > MAX_VALUES:
        raise CalculationRefused(f"statistics take at most {MAX_VALUES} values", details={"max_values": MAX_VALUES})
    values = [_finite(v, "every value") for v in values]
    return {"count": len(values), "mean": stats.fmean(values), "median": stats.median(values),
            "stdev": stats.stdev(values) if len(values) > 1 else 0.0, "min": min(values), "max": max(values)}


def tool_schema(fn: Callable[..., Any]) -> dict[str, Any]:
    """OpenAI tool schema from the function's type hints and docstring."""
    hints = get_type_hints(fn)
    params = {}
    required = []
    for name, p in inspect.signature(fn).parameters.items():
        if name == "ctx":
            continue  # the runtime's context (session, caller) of an operational tool, not a model argument
        params[name] = TypeAdapter(hints[name]).json_schema()
        if p.default is inspect.Parameter.empty:
            required.append(name)
    return {"type": "function", "function": {
        "name": fn.__name__, "description": inspect.getdoc(fn) or "",
        "parameters": {"type": "object", "properties": params, "required": required}}}
