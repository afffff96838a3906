"""Development tools: embedded S3 server, local Airflow stack, demo, benchmark runner, synthetic corpus.

Nothing in the library imports this package; only the CLI's development commands and the tests do.
"""
