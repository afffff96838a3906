"""Storage tiers: the tier interface, its backends, credentials, commit markers, pins and the health probe."""
