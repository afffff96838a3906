"""Core: config, units, object keys, checksums, temporaries and manifests (no I/O on tiers, no Airflow)."""
