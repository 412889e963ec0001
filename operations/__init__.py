"""Write operations with a human in the loop (issue 14): proposals and their state machine (proposals.py),
the registry of operations each connected system accepts (targets.py), and their execution (executor.py),
which only the Dagster job `execute_operation` runs, after a different person approved."""
