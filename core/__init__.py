"""Framework-free kernel: settings, database, models, migrations, shared domain code."""
