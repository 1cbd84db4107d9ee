"""A small LLaMA trained on the Python standard library's source, byte by byte (weights in ``weights/``)."""
from pathlib import Path

WEIGHTS = Path(__file__).parent / "weights"
