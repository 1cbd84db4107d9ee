"""The addition task and the committed default model."""
import numpy as np
import torch

from flightc.tasks.addition import VOCAB, AdditionTask, Problem


def test_encoding_and_exact_checking():
    task = AdditionTask()
    p = Problem(4821, 379)
    assert task.prompt_text(p) == "4821+0379=" and task.answer_text(p) == "00250"
    ids = task.prompt_ids(p)
    assert ids[0] == VOCAB["<bos>"] and len(ids) == task.prompt_len
    assert task.decode(ids) == "4821+0379="
    assert task.read_answer(task.answer_ids(p)) == 5200 and task.is_correct(p, task.answer_ids(p))
    assert not task.is_correct(p, task.answer_ids(Problem(4821, 378)))
    assert task.read_answer([VOCAB["+"]] * 5) is None
    assert max(VOCAB.values()) < task.vocab_size


def test_held_out_problems_never_train_or_calibrate():
    task = AdditionTask()
    held = {(p.a, p.b) for p in task.held_out()}
    assert len(held) == 500
    train = task.sample(2000, seed=3, exclude=held)
    assert not held & {(p.a, p.b) for p in train}
    calib = task.calibration()
    assert calib.shape == (8, task.prompt_len + task.answer_len)


def test_training_is_seeded(tmp_path):
    """The script reproduces bit-identical weights from its seed (a short run stands in for the full one)."""
    from flightc.models.addition.train import train

    for run in ("a", "b"):
        train(tmp_path / run, steps=3, batch=8, seed=5, threads=1)
    from safetensors.torch import load_file

    a, b = (load_file(str(tmp_path / r / "model.safetensors")) for r in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a" / "tokenizer.json").exists() and (tmp_path / "a" / "flightc_task.json").exists()


def test_committed_model_is_small_and_accurate():
    from flightc.evaluate import float_answers
    from flightc.models.builtin import load_torch_model, model_task, trained_folder
    from flightc.reference.float_ref import FloatReference

    folder = trained_folder("addition")
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert size < 5e6
    model = load_torch_model("builtin:addition")
    assert 5e5 <= sum(p.numel() for p in model.parameters()) <= 5e6
    task = model_task("builtin:addition")
    problems = task.held_out(200)
    answers = float_answers(FloatReference(model, device="cpu"), task, problems)
    assert np.mean([task.is_correct(p, a) for p, a in zip(problems, answers)]) >= 0.98
