"""Tasks with exactly checkable answers, used to train built-in models and to measure accuracy."""
