"""A small LLaMA trained on windows of 1,024 bytes of the Python standard library's source (weights in ``weights/``):
the long-context model that measures what attention over long prompts (and skipping parts of it) costs."""
from pathlib import Path

WEIGHTS = Path(__file__).parent / "weights"
