"""Tasks with checkable answers or measurable likelihood, used to train built-in models and to measure accuracy."""
from __future__ import annotations

import json
from pathlib import Path

TASK_FILE = "flightc_task.json"


def task_of(model_folder: str | Path):
    """The task a model folder declares in flightc_task.json (AdditionTask or TextTask), if any."""
    path = Path(model_folder) / TASK_FILE
    if not path.exists():
        return None
    kind = json.loads(path.read_text()).get("task")
    if kind == "addition":
        from flightc.tasks.addition import task_of as addition_task

        return addition_task(model_folder)
    if kind == "text":
        from flightc.tasks.text import TextTask

        d = json.loads(path.read_text())
        return TextTask(Path(model_folder), seq_len=d["seq_len"], vocab_size=d["vocab_size"])
    return None
