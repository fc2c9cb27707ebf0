"""Models: LLM backends behind one interface, embedders, and the embedded defaults."""
