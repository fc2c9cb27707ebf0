"""Text rules: the <fi> template syntax, excerpt expansion, the grammars built from a query
or a document, packing, prompts and token counting. No models, no files of rows."""
