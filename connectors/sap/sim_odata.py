"""The OData v2 protocol pieces of the SAP simulator (connectors/sap/simulator.py): the error body and
fault, the `/Date(ms)/` encoding, the EDMX `$metadata` document of a service, and the `$filter` parser
(eq ne gt ge lt le, and/or/not, parentheses, substringof/startswith/endswith/tolower/toupper).
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from xml.sax.saxutils import quoteattr

from connectors.sap.schema import EntityType, Service


def ms(value: dt.datetime) -> str:
    return f"/Date({int(value.timestamp() * 1000)})/"


def odata_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": {"lang": "en", "value": message},
                      "innererror": {"transactionid": secrets.token_hex(16).upper(), "errordetails": []}}}


class ODataFault(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


# ---------------------------------------------------------------------------------------------- EDMX


def edmx(service: Service) -> str:
    ns = service.name
    out = ['<?xml version="1.0" encoding="utf-8"?>',
           '<edmx:Edmx Version="1.0" xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx" '
           'xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata" '
           'xmlns:sap="http://www.sap.com/Protocols/SAPData">',
           '<edmx:DataServices m:DataServiceVersion="2.0">',
           f'<Schema Namespace="{ns}" xml:lang="en" sap:schema-version="1" '
           'xmlns="http://schemas.microsoft.com/ado/2008/09/edm">']
    assocs: list[tuple[str, EntityType, EntityType, tuple[str, ...]]] = []
    for t in service.types:
        out.append(f'<EntityType Name="{t.name}" sap:content-version="1"><Key>'
                   + "".join(f'<PropertyRef Name="{k}"/>' for k in t.keys) + "</Key>")
        for p in t.props:
            attrs = [f'Name="{p.name}"', f'Type="{p.type}"']
            if not p.nullable or p.name in t.keys:
                attrs.append('Nullable="false"')
            if p.max_length:
                attrs.append(f'MaxLength="{p.max_length}"')
            if p.precision is not None:
                attrs.append(f'Precision="{p.precision}"')
            if p.scale is not None:
                attrs.append(f'Scale="{p.scale}"')
            if p.concurrency:
                attrs.append('ConcurrencyMode="Fixed"')
            if p.name not in t.updatable:
                attrs.append('sap:updatable="false"')
            out.append(f"<Property {' '.join(attrs)}/>")
        for n in t.navs:
            target = service.by_type(n.target)
            name = f"assoc_{t.name}_{n.name}"
            assocs.append((name, t, target, n.fk))
            out.append(f'<NavigationProperty Name="{n.name}" Relationship="{ns}.{name}" '
                       f'FromRole="FromRole_{name}" ToRole="ToRole_{name}"/>')
        out.append("</EntityType>")
    for name, src, dst, fk in assocs:
        out.append(f'<Association Name="{name}" sap:content-version="1">'
                   f'<End Type="{ns}.{src.name}" Multiplicity="1" Role="FromRole_{name}"/>'
                   f'<End Type="{ns}.{dst.name}" Multiplicity="*" Role="ToRole_{name}"/>'
                   f'<ReferentialConstraint><Principal Role="FromRole_{name}">'
                   + "".join(f'<PropertyRef Name="{k}"/>' for k in fk)
                   + f'</Principal><Dependent Role="ToRole_{name}">'
                   + "".join(f'<PropertyRef Name="{k}"/>' for k in fk)
                   + "</Dependent></ReferentialConstraint></Association>")
    out.append(f'<EntityContainer Name="{ns}_Entities" m:IsDefaultEntityContainer="true" '
               'sap:supported-formats="atom json xlsx">')
    for t in service.types:
        out.append(f'<EntitySet Name="{t.set_name}" EntityType="{ns}.{t.name}" '
                   f'sap:creatable={quoteattr(str(t.creatable).lower())} '
                   f'sap:updatable={quoteattr(str(bool(t.updatable)).lower())} sap:deletable="false" '
                   'sap:content-version="1"/>')
    for name, src, dst, _fk in assocs:
        out.append(f'<AssociationSet Name="{name}" Association="{ns}.{name}" sap:creatable="false" '
                   f'sap:updatable="false" sap:deletable="false" sap:content-version="1">'
                   f'<End EntitySet="{src.set_name}" Role="FromRole_{name}"/>'
                   f'<End EntitySet="{dst.set_name}" Role="ToRole_{name}"/></AssociationSet>')
    out += ["</EntityContainer>", "</Schema>", "</edmx:DataServices>", "</edmx:Edmx>"]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- $filter

_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<dt>datetime'[^']*')|(?P<num>-?\d+(?:\.\d+)?[mMdDlLfF]?)"
                    r"|(?P<id>[A-Za-z_][A-Za-z0-9_]*)|(?P<sym>[(),]))")
_CMP = {"eq", "ne", "gt", "ge", "lt", "le"}
_FUNCS = {"substringof", "startswith", "endswith", "tolower", "toupper"}


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ODataFault(400, "SY/530", f"Invalid token at position {pos} in $filter")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


Pred = Callable[[dict[str, Any]], Any]


def _either(a: Pred, b: Pred) -> Pred:
    return lambda r: bool(a(r)) or bool(b(r))


def _both(a: Pred, b: Pred) -> Pred:
    return lambda r: bool(a(r)) and bool(b(r))


class FilterParser:
    """A recursive-descent parser of the $filter subset SAP clients send; builds a predicate."""

    def __init__(self, text: str, etype: EntityType) -> None:
        self.toks, self.i, self.etype = _tokens(text), 0, etype

    def _peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def _take(self, value: str | None = None) -> tuple[str, str]:
        tok = self._peek()
        if tok is None or (value is not None and tok[1] != value):
            raise ODataFault(400, "SY/530", f"Invalid $filter: expected {value or 'a term'}")
        self.i += 1
        return tok

    def parse(self) -> Callable[[dict[str, Any]], Any]:
        fn = self._or()
        if self._peek() is not None:
            raise ODataFault(400, "SY/530", f"Invalid $filter: unexpected {self._peek()[1]!r}")  # type: ignore[index]
        return fn

    def _chain(self, word: str, operand: Callable[[], Pred], join: Callable[[Pred, Pred], Pred]) -> Pred:
        """`operand (word operand)*`, joined left to right."""
        left = operand()
        while (tok := self._peek()) and tok[1] == word:
            self.i += 1
            left = join(left, operand())
        return left

    def _or(self) -> Callable[[dict[str, Any]], Any]:
        return self._chain("or", self._and, _either)

    def _and(self) -> Callable[[dict[str, Any]], Any]:
        return self._chain("and", self._not, _both)

    def _not(self) -> Callable[[dict[str, Any]], Any]:
        if (tok := self._peek()) and tok[1] == "not":
            self.i += 1
            inner = self._not()
            return lambda r: not inner(r)
        return self._cmp()

    def _cmp(self) -> Callable[[dict[str, Any]], Any]:
        left = self._primary()
        tok = self._peek()
        if tok and tok[0] == "id" and tok[1] in _CMP:
            self.i += 1
            op, right = tok[1], self._primary()

            def compare(r: dict[str, Any]) -> bool:
                a, b = left(r), right(r)
                if op == "eq":
                    return bool(a == b)
                if op == "ne":
                    return bool(a != b)
                if a is None or b is None:
                    return False
                try:
                    return bool({"gt": a > b, "ge": a >= b, "lt": a < b, "le": a <= b}[op])
                except TypeError:
                    raise ODataFault(400, "SY/530", f"Invalid $filter: cannot compare with {op}") from None
            return compare
        return left

    def _primary(self) -> Callable[[dict[str, Any]], Any]:
        kind, value = self._take()
        if value == "(":
            inner = self._or()
            self._take(")")
            return inner
        if kind == "str":
            s = value[1:-1].replace("''", "'")
            return lambda r: s
        if kind == "dt":
            raw = value[len("datetime'"):-1]
            try:
                when = dt.datetime.fromisoformat(raw).replace(tzinfo=dt.UTC)
            except ValueError:
                raise ODataFault(400, "SY/530", f"Invalid datetime literal {raw!r}") from None
            return lambda r: when
        if kind == "num":
            num = Decimal(value.rstrip("mMdDlLfF"))
            return lambda r: num
        if kind == "id":
            if value in ("true", "false"):
                b = value == "true"
                return lambda r: b
            if value == "null":
                return lambda r: None
            if value in _FUNCS:
                self._take("(")
                args = [self._or()]
                while (tok := self._peek()) and tok[1] == ",":
                    self.i += 1
                    args.append(self._or())
                self._take(")")
                return self._func(value, args)
            if value not in self.etype.names:
                raise ODataFault(400, "SY/530", f"Property {value} not found in type {self.etype.name}")
            return lambda r: r.get(value)
        raise ODataFault(400, "SY/530", f"Invalid $filter: unexpected {value!r}")

    @staticmethod
    def _func(name: str, args: list[Callable[[dict[str, Any]], Any]]) -> Callable[[dict[str, Any]], Any]:
        want = 1 if name in ("tolower", "toupper") else 2
        if len(args) != want:
            raise ODataFault(400, "SY/530", f"Invalid $filter: {name} takes {want} arguments")
        if name == "tolower":
            return lambda r: str(args[0](r) or "").lower()
        if name == "toupper":
            return lambda r: str(args[0](r) or "").upper()
        if name == "substringof":
            return lambda r: str(args[0](r)) in str(args[1](r) or "")
        if name == "startswith":
            return lambda r: str(args[0](r) or "").startswith(str(args[1](r)))
        return lambda r: str(args[0](r) or "").endswith(str(args[1](r)))


def sort_key(name: str) -> Callable[[dict[str, Any]], tuple[bool, Any]]:
    return lambda r: (r.get(name) is None, r.get(name))



def parse_literal(text: str, etype: EntityType) -> Any:
    """The value of one $filter literal (a key predicate's value): string, number, datetime, boolean, null."""
    return FilterParser(text, etype)._primary()({})
