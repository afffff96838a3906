"""The transfer engine: copy a manifest (or a shard of it) between tiers, verified and resumable."""
