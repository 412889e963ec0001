"""How the SAP simulator (connectors/sap/simulator.py) shows its rows as OData v2: ETags from the
`ConcurrencyMode="Fixed"` property, entity URIs and `__metadata`, typed JSON values, key predicates, and
the paged entity-set collection.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode

from connectors.sap.schema import SERVICE_ROOT, EntityType, Service
from connectors.sap.sim_odata import FilterParser, ODataFault, ms, parse_literal, sort_key


def etag(etype: EntityType, row: dict[str, Any]) -> str | None:
    conc = [p for p in etype.props if p.concurrency]
    if not conc:
        return None
    value = row.get(conc[0].name)
    stamp = value.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0" if isinstance(value, dt.datetime) else str(value)
    return f"W/\"datetime'{quote(stamp)}'\""


def key_string(etype: EntityType, row: dict[str, Any]) -> str:
    parts = [f"{k}={_literal(row.get(k))}" for k in etype.keys]
    return parts[0].split("=", 1)[1] if len(parts) == 1 else ",".join(parts)


def _literal(v: Any) -> str:
    if isinstance(v, dt.datetime):
        return f"datetime'{v.strftime('%Y-%m-%dT%H:%M:%S')}'"
    if isinstance(v, Decimal):
        return f"{v}M"
    return "'" + str(v).replace("'", "''") + "'"


def _json_value(ptype: str, value: Any, scale: int | None) -> Any:
    if value is None:
        return None
    if ptype == "Edm.DateTime":
        return ms(value)
    if ptype == "Edm.Decimal":
        return str(Decimal(value).quantize(Decimal(1).scaleb(-(scale or 0))))
    return value


def entity_json(svc: Service, etype: EntityType, row: dict[str, Any], base: str,
                select: list[str] | None = None) -> dict[str, Any]:
    uri = f"{base}{SERVICE_ROOT}{svc.name}/{etype.set_name}({quote(key_string(etype, row), safe=',=')})"
    meta: dict[str, Any] = {"id": uri, "uri": uri, "type": f"{svc.name}.{etype.name}"}
    tag = etag(etype, row)
    if tag:
        meta["etag"] = tag
    out: dict[str, Any] = {"__metadata": meta}
    for p in etype.props:
        if select is None or p.name in select:
            out[p.name] = _json_value(p.type, row.get(p.name), p.scale)
    for n in etype.navs:
        if select is None:
            out[n.name] = {"__deferred": {"uri": f"{uri}/{n.name}"}}
    return out


def parse_key(etype: EntityType, raw: str) -> dict[str, Any]:
    parts, buf, quoted = [], "", False
    for ch in raw:
        if ch == "'":
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append(buf)
            buf = ""
        else:
            buf += ch
    parts.append(buf)
    key: dict[str, Any] = {}
    for i, part in enumerate(parts):
        name, _, lit = part.partition("=") if "=" in part and not part.startswith("'") else ("", "", part)
        name = name or (etype.keys[i] if i < len(etype.keys) else "")
        if name not in etype.keys:
            raise ODataFault(400, "/IWBEP/CM_MGW_RT/021", f"Invalid key predicate '{raw}'")
        key[name] = parse_literal(lit, etype)
    if set(key) != set(etype.keys):
        raise ODataFault(400, "/IWBEP/CM_MGW_RT/021", f"Invalid key predicate '{raw}': all keys are required")
    return {k: (Decimal(v) if isinstance(v, Decimal) else v) for k, v in key.items()}


def collection(rows: list[dict[str, Any]], page_size: int, svc: Service, etype: EntityType, q: dict[str, str],
               base: str, path: str, count_only: bool) -> tuple[int, Any]:
    """One page of an entity set: $filter, /$count, $orderby, $select, $top/$skip, server paging (`__next`
    with a $skiptoken) and `__count` with $inlinecount=allpages."""
    rows = list(rows)
    if q.get("$filter"):
        pred = FilterParser(q["$filter"], etype).parse()
        rows = [r for r in rows if pred(r)]
    if count_only:
        return 200, str(len(rows))
    if q.get("$orderby"):
        for clause in reversed([c.strip() for c in q["$orderby"].split(",") if c.strip()]):
            name, _, direction = clause.partition(" ")
            if name not in etype.names:
                raise ODataFault(400, "SY/530", f"Property {name} not found in type {etype.name}")
            rows.sort(key=sort_key(name), reverse=direction.strip().lower() == "desc")
    select = None
    if q.get("$select"):
        select = [s.strip() for s in q["$select"].split(",") if s.strip()]
        bad = [s for s in select if s not in etype.names]
        if bad:
            raise ODataFault(400, "SY/530", f"Property {bad[0]} not found in type {etype.name}")
    try:
        skip, top = int(q.get("$skip", 0)), int(q["$top"]) if "$top" in q else None
        token = int(q.get("$skiptoken", 0))
    except ValueError:
        raise ODataFault(400, "SY/530", "$top, $skip and $skiptoken must be integers") from None
    if skip < 0 or token < 0 or (top is not None and top < 0):
        raise ODataFault(400, "SY/530", "$top and $skip must not be negative")
    total = len(rows)
    start = skip + token
    end = total if top is None else min(total, skip + top)
    page_end = min(end, start + page_size)
    d: dict[str, Any] = {"results": [entity_json(svc, etype, r, base, select) for r in rows[start:page_end]]}
    if q.get("$inlinecount") == "allpages":
        d["__count"] = str(total)
    if page_end < end:
        nxt = {k: v for k, v in q.items() if k != "$skiptoken"}
        nxt["$skiptoken"] = str(token + page_size)
        d["__next"] = f"{base}{path}?{urlencode(nxt, safe='$', quote_via=quote)}"
    return 200, {"d": d}
