"""Built-in models: LLaMA-family configurations and seeded random weights."""
