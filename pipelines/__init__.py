"""Tierflow: move AI training data and checkpoints through storage tiers, sized by a bandwidth model."""
