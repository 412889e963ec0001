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
_UN = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS: dict[str, Callable] = {"sqrt": math.sqrt, "abs": abs, "round": round, "min": min, "max": max, "sum": sum,
                               "mean": stats.fmean, "median": stats.median, "stdev": stats.stdev}
MAX_POWER = 100


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_POWER:
            raise InvalidInput("exponent too large", code="calculation_error")
        return _BIN[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UN:
        return _UN[type(node.op)](_eval(node.operand))
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_eval(e) for e in node.elts]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS and not node.keywords:
        return _FUNCS[node.func.id](*[_eval(a) for a in node.args])
    raise InvalidInput(f"unsupported expression element: {type(node).__name__}", code="calculation_error")


def calculate(expression: str) -> float:
    """Evaluate an arithmetic expression (+ - * / // % **, parentheses, sqrt, abs, round, min, max, sum,
    mean, median, stdev)."""
    if len(expression) > 500:
        raise InvalidInput("expression too long", code="calculation_error")
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
        value = _eval(tree)
    except (SyntaxError, ZeroDivisionError, TypeError, ValueError, stats.StatisticsError) as exc:
        raise InvalidInput(f"cannot calculate {expression!r}: {exc}", code="calculation_error") from None
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
    f, t = from_unit.strip().lower(), to_unit.strip().lower()
    temps = {"c": "c", "°c": "c", "f": "f", "°f": "f", "k": "k"}
    if f in temps and t in temps:
        c = {"c": value, "f": (value - 32) * 5 / 9, "k": value - 273.15}[temps[f]]
        return {"c": c, "f": c * 9 / 5 + 32, "k": c + 273.15}[temps[t]]
    if f not in _UNITS or t not in _UNITS:
        raise InvalidInput(f"unknown unit {f if f not in _UNITS else t!r}", code="calculation_error")
    if _UNITS[f][0] != _UNITS[t][0]:
        raise InvalidInput(f"cannot convert {_UNITS[f][0]} to {_UNITS[t][0]}", code="calculation_error")
    return value * _UNITS[f][1] / _UNITS[t][1]


def statistics(values: list[float]) -> dict[str, float]:
    """Count, mean, median, standard deviation, min and max of a list of numbers."""
    if not values:
        raise InvalidInput("no values", code="calculation_error")
    return {"count": len(values), "mean": stats.fmean(values), "median": stats.median(values),
            "stdev": stats.stdev(values) if len(values) > 1 else 0.0, "min": min(values), "max": max(values)}


def tool_schema(fn: Callable) -> dict:
    """OpenAI tool schema from the function's type hints and docstring."""
    hints = get_type_hints(fn)
    params = {}
    required = []
    for name, p in inspect.signature(fn).parameters.items():
        params[name] = TypeAdapter(hints[name]).json_schema()
        if p.default is inspect.Parameter.empty:
            required.append(name)
    return {"type": "function", "function": {
        "name": fn.__name__, "description": inspect.getdoc(fn) or "",
        "parameters": {"type": "object", "properties": params, "required": required}}}
