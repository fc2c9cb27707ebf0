"""Execution: read inputs, run stages in batches, write outputs atomically, report."""
