"""Shift monitoring: MES polling results → per-tenant threshold rules → de-duplicated alerts with a
root-cause draft, dispatched to webhooks and e-mail. Dagster sensors/jobs wrap it."""
