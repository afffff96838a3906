"""The checkpoint lifecycle: discovery, promotion, retention and pruning, restore."""
