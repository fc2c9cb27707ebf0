"""Stages: pure functions (or small classes holding a model) from a batch of records to a
batch of records. They do no file I/O and keep no global state; executors compose them."""
