"""Repositories: one module per aggregate, plain functions taking a Session.

The caller owns the transaction (a route's tenant session, an asset's or a CLI's): a repository
function never opens, commits or rolls back one, so several calls compose into one unit of work.
Access rules are policy (compliance/), not storage: where a read depends on who asks, the caller
passes the SQL predicate (compliance.access.read_filter) and the repository applies it.
"""
