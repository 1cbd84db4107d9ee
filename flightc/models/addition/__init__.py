"""The built-in default model: a small LLaMA trained on 4-digit addition (weights in ``weights/``)."""
from pathlib import Path

WEIGHTS = Path(__file__).parent / "weights"
