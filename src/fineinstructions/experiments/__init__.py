"""Proving the data: what reads finished datasets and never reaches into the pipeline's
internals (DESIGN §6): the audit, evaluation sets, and (later) export, pre-training and
evaluation."""
