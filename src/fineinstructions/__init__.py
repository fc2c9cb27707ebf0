"""fineinstructions: grounded instruction→answer training data at pre-training scale."""

__version__ = "0.1.0"
