"""SQL Guard: structured questions over the read-only reporting schema (migration 0019), checked with a real
SQL parser (sqlglot, PostgreSQL dialect) before anything reaches the database.

A query is accepted only when it is ONE plain SELECT over allow-listed `reporting` views and columns the
caller's role may read, built from allow-listed expressions and functions, with a literal LIMIT no larger
than the row limit. Refused, among others: anything that is not a SELECT, stacked statements, comments,
CTEs (a data-modifying CTE gets its own reason), subqueries and set operations (UNION …), system catalogs,
views outside the allow-list, functions outside it (pg_sleep, dblink, set_config, current_setting …),
unicode-escaped identifiers (U&"…", which sqlglot does not read the way PostgreSQL does), and a missing or
too large LIMIT.

What runs is not the text that was checked but the SQL sqlglot regenerates from the checked tree, with
every view qualified as `reporting.<view>` and bound values rendered as quoted literals: a construct the
parser read differently from PostgreSQL cannot survive the round trip. It runs as the application role
(row-level security applies: the views are security_invoker) in a READ ONLY transaction with a statement
timeout. Every query, accepted or refused, is an audit record (`sql.query`, outcome success / denied /
failure) with the reason.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from compliance import audit
from core.enums import Role
from core.errors import InvalidInput

SCHEMA = "reporting"
DIALECT = "postgres"
MAX_ROWS = 500  # the largest LIMIT accepted
MAX_OFFSET = 100_000
MAX_SQL_CHARS = 4000
STATEMENT_TIMEOUT_MS = 3000


class SQLRefused(InvalidInput):
    """The guard refused a query; `reason` (also in details) says which rule."""

    code = "sql_refused"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"query refused ({reason}): {message}", details={"reason": reason})
        self.reason = reason


class SQLFailed(InvalidInput):
    """An accepted query failed in the database (statement timeout, a cast that does not hold)."""

    code = "sql_failed"


@dataclass(frozen=True)
class View:
    """A reporting view: the lowest role that may query it, and per column the lowest role that may read it."""

    name: str
    min_role: str
    columns: Mapping[str, str]
    description: str = ""


def _cols(names: str, role: str = "viewer", **restricted: str) -> dict[str, str]:
    out = dict.fromkeys(names.split(), role)
    out.update(restricted)
    return out


# The allow-list. It names the views of migration 0019 (and the SAP extract views once they exist).
VIEWS: dict[str, View] = {v.name: v for v in (
    View("machine_status", "viewer", _cols("machine_id line name state since observed_at", reason="operator"),
         "latest MES state per machine (RUNNING, DOWN, IDLE, SETUP)"),
    View("downtime_events", "viewer",
         _cols("event_id machine_id line started_at ended_at duration_minutes", reason="operator"),
         "MES downtime events; ended_at NULL while the machine is still down"),
    View("quality_reports", "viewer",
         _cols("report_id line product period_start period_end inspected defects defect_rate"),
         "hourly MES quality reports per line"),
    View("sap_inventory", "viewer",
         _cols("material plant storage_location batch stock_type quantity unit extracted_at"),
         "SAP stock per material, plant and storage location (latest extract; stock_type 01 = unrestricted)"),
    View("sap_stock_history", "viewer",
         _cols("material plant storage_location stock_type quantity unit extracted_at"),
         "every SAP stock extract (history, for trends)"),
    View("sap_materials", "viewer",
         _cols("material plant description product_type product_group base_unit reorder_point safety_stock "
               "extracted_at"), "SAP material master per plant"),
    View("sap_open_purchase_orders", "operator",
         _cols("purchase_order item supplier supplier_name material plant text quantity received open_quantity unit "
               "currency order_date delivery_date extracted_at", "operator", net_price="admin"),
         "open SAP purchase order items (not completely delivered)"),
    View("sap_cost_centers", "operator",
         _cols("controlling_area cost_center name description category responsible currency extracted_at",
               "operator", planned_costs="admin", actual_costs="admin"),
         "SAP cost centres with planned and actual costs"),
)}

# Expression nodes a query may contain (sqlglot classes). Everything else is refused by name.
_ALLOWED_NODES: tuple[type[exp.Expr], ...] = (
    exp.Select, exp.From, exp.Join, exp.Where, exp.Group, exp.Having, exp.Order, exp.Ordered, exp.Limit,
    exp.Offset, exp.Column, exp.Identifier, exp.Table, exp.TableAlias, exp.Alias, exp.Literal, exp.Boolean,
    exp.Null, exp.Star, exp.Paren, exp.And, exp.Or, exp.Not, exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE,
    exp.Is, exp.In, exp.Between, exp.Like, exp.ILike, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.Neg,
    exp.Case, exp.If, exp.Cast, exp.DataType, exp.Distinct, exp.Placeholder, exp.Interval, exp.Var,
)
# Functions (sqlglot's typed function nodes). Anything parsed as an unknown function (exp.Anonymous:
# pg_sleep, dblink, set_config, current_setting, …) or a known one not listed here is refused.
_ALLOWED_FUNCTIONS: tuple[type[exp.Expr], ...] = (
    exp.Count, exp.Sum, exp.Avg, exp.Min, exp.Max, exp.Round, exp.Coalesce, exp.Lower, exp.Upper, exp.Abs,
    exp.TimestampTrunc, exp.DateTrunc, exp.Extract, exp.Greatest, exp.Least, exp.Nullif, exp.CurrentTimestamp,
    exp.CurrentDate,
)
_ALLOWED_TYPES = frozenset({
    exp.DataType.Type.INT, exp.DataType.Type.BIGINT, exp.DataType.Type.SMALLINT, exp.DataType.Type.DECIMAL,
    exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT, exp.DataType.Type.TEXT, exp.DataType.Type.VARCHAR,
    exp.DataType.Type.DATE, exp.DataType.Type.TIMESTAMPTZ, exp.DataType.Type.TIMESTAMP,
})
_WRITES: tuple[type[exp.Expr], ...] = (
    exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter, exp.Copy, exp.Command,
    exp.TruncateTable, exp.Into, exp.Lock,
)
_SET_OPERATIONS: tuple[type[exp.Expr], ...] = (exp.Union, exp.Intersect, exp.Except)
_SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast"})
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_UNICODE_ESCAPE = re.compile(r"u&\s*['\"]", re.I)


@dataclass(frozen=True)
class Checked:
    """An accepted query: the SQL that will run (regenerated, views qualified, values bound), the views it
    reads and its row limit."""

    sql: str
    views: tuple[str, ...]
    limit: int


@dataclass
class QueryResult:
    sql: str
    columns: list[str]
    rows: list[list[Any]]
    views: tuple[str, ...]
    ms: float
    guard_ms: float
    details: dict[str, Any] = field(default_factory=dict)


def allowed_views(role: str) -> dict[str, list[str]]:
    """The views and columns `role` may query (what a model is told it may use)."""
    rank = Role.rank_of(role)
    return {v.name: [c for c, r in v.columns.items() if rank >= Role(r).rank]
            for v in VIEWS.values() if rank >= Role(v.min_role).rank}


def _refuse(reason: str, message: str) -> SQLRefused:
    return SQLRefused(reason, message)


def _literal(value: object) -> exp.Expression:
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int | float | decimal.Decimal):
        return exp.Literal.number(value)
    if isinstance(value, dt.datetime | dt.date):
        return exp.Literal.string(value.isoformat())
    if isinstance(value, str):
        if "\x00" in value:
            raise _refuse("bad_parameter", "a bound value contains a NUL character")
        return exp.Literal.string(value)
    raise _refuse("bad_parameter", f"cannot bind a value of type {type(value).__name__}")


def _int_literal(node: exp.Expression | None, what: str) -> int:
    if not isinstance(node, exp.Literal) or node.is_string or not re.fullmatch(r"\d{1,9}", str(node.this)):
        raise _refuse(f"{what}_not_literal", f"{what.upper()} must be a literal whole number")
    return int(node.this)


def _node_name(node: exp.Expr) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    if isinstance(node, exp.Func):
        return node.sql_name().lower()
    return type(node).__name__


def check(sql: str, role: str, params: Mapping[str, object] | None = None, *, max_rows: int = MAX_ROWS) -> Checked:
    """Accept (→ Checked) or refuse (→ SQLRefused) one query for a caller of `role`."""
    if not sql or not sql.strip():
        raise _refuse("empty", "no query")
    if len(sql) > MAX_SQL_CHARS:
        raise _refuse("too_long", f"the query is longer than {MAX_SQL_CHARS} characters")
    if "\x00" in sql:
        raise _refuse("nul_byte", "the query contains a NUL character")
    if _UNICODE_ESCAPE.search(sql):
        raise _refuse("unicode_escape", "unicode-escaped identifiers or strings (U&'…') are not accepted")
    try:
        tokens = sqlglot.Dialect.get_or_raise(DIALECT).tokenize(sql)
    except TokenError as exc:
        raise _refuse("parse_error", f"cannot tokenise the query: {str(exc)[:200]}") from None
    if any(t.comments for t in tokens) or "/*" in sql or "--" in sql:
        raise _refuse("comment", "comments are not accepted in queries")
    try:
        statements = [s for s in sqlglot.parse(sql, read=DIALECT) if s is not None]
    except ParseError as exc:
        raise _refuse("parse_error", f"cannot parse the query: {str(exc).splitlines()[0][:200]}") from None
    if len(statements) != 1:
        raise _refuse("stacked_statements", f"exactly one statement is accepted, got {len(statements)}")
    tree = statements[0]
    for node in tree.walk():
        if isinstance(node, _WRITES):
            raise _refuse("write_statement", f"{type(node).__name__.upper()} is not a read")
    if isinstance(tree, _SET_OPERATIONS):
        raise _refuse("set_operation", f"{type(tree).__name__.upper()} of several queries is not accepted")
    if not isinstance(tree, exp.Select):
        raise _refuse("not_select", f"only SELECT is accepted, got {type(tree).__name__.upper()}")
    for node in tree.walk():
        if isinstance(node, exp.With | exp.CTE):
            raise _refuse("cte", "WITH (common table expressions) is not accepted")
        if isinstance(node, exp.Subquery) or (isinstance(node, exp.Select) and node is not tree):
            raise _refuse("subquery", "subqueries are not accepted")
        if isinstance(node, _SET_OPERATIONS):
            raise _refuse("set_operation", f"{type(node).__name__.upper()} is not accepted")
        if isinstance(node, _ALLOWED_FUNCTIONS):
            continue
        if not isinstance(node, _ALLOWED_NODES):
            if isinstance(node, exp.Func):
                raise _refuse("function_not_allowed", f"function {_node_name(node)} is not allowed")
            raise _refuse("construct_not_allowed", f"{_node_name(node)} is not allowed")
        if isinstance(node, exp.Star) and not isinstance(node.parent, exp.Count):
            raise _refuse("star", "name the columns (SELECT * is only accepted as COUNT(*))")
        if isinstance(node, exp.DataType) and node.this not in _ALLOWED_TYPES:
            raise _refuse("type_not_allowed", f"cast to {node.sql(DIALECT)} is not allowed")
        if isinstance(node, exp.Var) and not isinstance(node.parent, exp.Extract | exp.TimestampTrunc | exp.DateTrunc
                                                        | exp.Interval):
            raise _refuse("construct_not_allowed", f"keyword {node.name} is not allowed here")
        if isinstance(node, exp.Identifier) and not _IDENT.match(str(node.this).lower()):
            raise _refuse("identifier_not_allowed", f"identifier {str(node.this)[:60]!r} is not a plain name")
        if isinstance(node, exp.Placeholder) and (params is None or node.name not in params):
            raise _refuse("unbound_parameter", f"parameter {node.name or '?'} has no value")

    rank = Role.rank_of(role)
    views: dict[str, View] = {}  # alias or name in the query → view
    for table in tree.find_all(exp.Table):
        schema, name = table.db.lower(), table.name.lower()
        if table.catalog or not isinstance(table.this, exp.Identifier):
            raise _refuse("relation_not_allowed", f"{table.sql(DIALECT)} is not a reporting view")
        if schema in _SYSTEM_SCHEMAS or name.startswith("pg_"):
            raise _refuse("system_catalog", f"{table.sql(DIALECT)} is a system catalog")
        view = VIEWS.get(name)
        if schema not in ("", SCHEMA) or view is None:
            raise _refuse("relation_not_allowed", f"{table.sql(DIALECT)} is not an allow-listed reporting view")
        if rank < Role(view.min_role).rank:
            raise _refuse("view_not_allowed", f"the {role} role may not query {name}")
        alias = table.alias_or_name.lower()
        if alias in views and views[alias] is not view:
            raise _refuse("ambiguous_alias", f"alias {alias} names two views")
        views[alias] = view
        table.set("db", exp.to_identifier(SCHEMA))
    if not views:
        raise _refuse("no_view", "the query reads no reporting view")
    outputs = {e.alias.lower() for e in tree.expressions if isinstance(e, exp.Alias)}
    for col in tree.find_all(exp.Column):
        name, qualifier = col.name.lower(), col.table.lower()
        if col.args.get("db") or col.args.get("catalog"):
            raise _refuse("column_not_allowed", f"{col.sql(DIALECT)}: qualify columns by view or alias only")
        if qualifier:
            if qualifier not in views:
                raise _refuse("column_not_allowed", f"{col.sql(DIALECT)}: unknown view or alias {qualifier}")
            candidates = [views[qualifier]]
        else:
            candidates = [v for v in views.values() if name in v.columns]
            if not candidates and name in outputs and not isinstance(col.parent, exp.Alias):
                continue  # ORDER BY / GROUP BY on an output alias
        if not candidates or any(name not in v.columns for v in candidates):
            raise _refuse("column_not_allowed", f"column {name} is not in the allow-listed views")
        for v in candidates:
            if rank < Role(v.columns[name]).rank:
                raise _refuse("column_not_allowed", f"the {role} role may not read {v.name}.{name}")

    limit = tree.args.get("limit")
    if limit is None:
        raise _refuse("limit_required", f"add LIMIT n (n ≤ {max_rows})")
    n = _int_literal(limit.expression, "limit")
    if n > max_rows:
        raise _refuse("limit_too_large", f"LIMIT {n} is over the row limit of {max_rows}")
    offset = tree.args.get("offset")
    if offset is not None and _int_literal(offset.expression, "offset") > MAX_OFFSET:
        raise _refuse("offset_too_large", f"OFFSET is over {MAX_OFFSET}")
    for ph in list(tree.find_all(exp.Placeholder)):
        ph.replace(_literal((params or {})[ph.name]))
    return Checked(tree.sql(dialect=DIALECT), tuple(sorted({v.name for v in views.values()})), n)


def _json(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def run(engine: sa.Engine, tenant_id: uuid.UUID, *, actor: str, role: str, sql: str,
        params: Mapping[str, object] | None = None, purpose: str = "question", author: str = "template",
        max_rows: int = MAX_ROWS, timeout_ms: int | None = None) -> QueryResult:
    """Check `sql` for `role`, then run it for `tenant_id` on `engine` (the application role's) in a READ ONLY
    transaction with a statement timeout. Audited either way (own transaction, so the record survives the
    caller's rollback); refusals raise SQLRefused, database failures SQLFailed. `author` says who wrote the
    SQL: "template" (rule-chosen) or "model". `timeout_ms` defaults to STATEMENT_TIMEOUT_MS (read per call)."""
    timeout_ms = STATEMENT_TIMEOUT_MS if timeout_ms is None else timeout_ms
    digest = hashlib.sha256(sql.encode()).hexdigest()
    base = {"sql": sql[:2000], "sql_sha256": digest, "purpose": purpose, "author": author,
            "params": {k: str(v)[:200] for k, v in (params or {}).items()}}
    t0 = time.perf_counter()
    try:
        checked = check(sql, role, params, max_rows=max_rows)
    except SQLRefused as exc:
        audit.record_detached(tenant_id, actor=actor, actor_role=role, action="sql.query", resource_type="sql",
                              resource_id=digest[:16], outcome="denied",
                              details={**base, "reason": exc.reason, "message": exc.message})
        raise
    guard_ms = (time.perf_counter() - t0) * 1000
    t1 = time.perf_counter()
    try:
        with engine.connect() as conn, conn.begin():
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            conn.execute(sa.text("SELECT set_config('eap.tenant_id', :t, true)"), {"t": str(tenant_id)})
            conn.execute(sa.text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": str(int(timeout_ms))})
            result = conn.exec_driver_sql(checked.sql)
            columns = list(result.keys())
            rows = [[_json(v) for v in row] for row in result.fetchmany(checked.limit)]
    except sa.exc.DBAPIError as exc:
        first = str(exc.orig).strip().splitlines()[0][:300] if exc.orig else type(exc).__name__
        reason = "statement_timeout" if "statement timeout" in first else "database_error"
        audit.record_detached(tenant_id, actor=actor, actor_role=role, action="sql.query", resource_type="sql",
                              resource_id=digest[:16], outcome="failure",
                              details={**base, "executed_sql": checked.sql, "reason": reason, "message": first})
        message = (f"the query ran longer than the {timeout_ms / 1000:g} s statement timeout and was cancelled; "
                   "ask a narrower question" if reason == "statement_timeout" else f"the query failed: {first}")
        raise SQLFailed(message, code="sql_failed", details={"reason": reason}) from None
    ms = (time.perf_counter() - t1) * 1000
    audit.record_detached(tenant_id, actor=actor, actor_role=role, action="sql.query", resource_type="sql",
                          resource_id=digest[:16], outcome="success",
                          details={**base, "executed_sql": checked.sql, "views": list(checked.views),
                                   "rows": len(rows), "ms": round(ms, 1), "guard_ms": round(guard_ms, 2)})
    return QueryResult(checked.sql, columns, rows, checked.views, ms, guard_ms)
