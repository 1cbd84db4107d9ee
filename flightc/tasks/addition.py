"""Multi-digit addition: ``4821+0379=`` -> ``00252`` (the sum's digits, least significant first).

Operands are zero-padded to ``digits`` digits; the answer has ``digits + 1`` digits written in
reverse, so each output digit depends only on aligned operand digits and the previous carry
(the layout small transformers learn reliably; Lee et al., "Teaching Arithmetic to Small
Transformers", 2023). Every answer is checked exactly.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flightc.tasks import TASK_FILE

SPECIALS = ("<pad>", "<bos>", "<eos>")
SYMBOLS = tuple("0123456789") + ("+", "=")
VOCAB = {tok: i for i, tok in enumerate(SPECIALS + SYMBOLS)}


@dataclass(frozen=True)
class Problem:
    a: int
    b: int

    @property
    def answer(self) -> int:
        return self.a + self.b


@dataclass(frozen=True)
class AdditionTask:
    digits: int = 4
    vocab_size: int = 16  # len(VOCAB) rounded up to a multiple of the hardware's 16-row tiles

    @property
    def answer_len(self) -> int:
        return self.digits + 1

    @property
    def prompt_len(self) -> int:
        return 1 + 2 * self.digits + 2  # <bos> a + b =

    def prompt_text(self, p: Problem) -> str:
        return f"{p.a:0{self.digits}d}+{p.b:0{self.digits}d}="

    def answer_text(self, p: Problem) -> str:
        return f"{p.answer:0{self.answer_len}d}"[::-1]

    def encode(self, text: str, bos: bool = True) -> list[int]:
        return ([VOCAB["<bos>"]] if bos else []) + [VOCAB[c] for c in text]

    def decode(self, ids: list[int]) -> str:
        inv = {i: t for t, i in VOCAB.items()}
        return "".join(inv.get(int(i), "?") for i in ids if inv.get(int(i)) not in SPECIALS)

    def prompt_ids(self, p: Problem) -> list[int]:
        return self.encode(self.prompt_text(p))

    def answer_ids(self, p: Problem) -> list[int]:
        return self.encode(self.answer_text(p), bos=False)

    def read_answer(self, ids: list[int]) -> int | None:
        """The integer a generated answer stands for, or None if it is not all digits."""
        text = self.decode(ids[: self.answer_len])
        if len(text) != self.answer_len or not text.isdigit():
            return None
        return int(text[::-1])

    def is_correct(self, p: Problem, ids: list[int]) -> bool:
        return self.read_answer(ids) == p.answer

    def sample(self, n: int, seed: int, exclude: set[tuple[int, int]] | None = None) -> list[Problem]:
        """n distinct problems; operand lengths are drawn uniformly so short numbers are not rare."""
        rng = np.random.default_rng(seed)
        out: list[Problem] = []
        seen = set(exclude or ())
        while len(out) < n:
            la, lb = rng.integers(1, self.digits + 1, size=2)
            a = int(rng.integers(0, 10 ** la))
            b = int(rng.integers(0, 10 ** lb))
            if (a, b) not in seen:
                seen.add((a, b))
                out.append(Problem(a, b))
        return out

    def held_out(self, n: int = 500) -> list[Problem]:
        """The evaluation problems: fixed by seed and never used for training."""
        return self.sample(n, seed=12345)

    def sequences(self, problems: list[Problem]) -> np.ndarray:
        """Prompt followed by answer, one row per problem (teacher forcing / calibration)."""
        return np.array([self.prompt_ids(p) + self.answer_ids(p) for p in problems])

    def calibration(self, n: int = 8, seed: int = 7) -> np.ndarray:
        return self.sequences(self.sample(n, seed, exclude={(p.a, p.b) for p in self.held_out()}))

    def to_json(self) -> str:
        return json.dumps({"task": "addition", "digits": self.digits, "vocab_size": self.vocab_size})


def task_of(model_folder: str | Path) -> AdditionTask | None:
    """The task a model folder declares in flightc_task.json, if any."""
    path = Path(model_folder) / TASK_FILE
    if not path.exists():
        return None
    d = json.loads(path.read_text())
    if d.get("task") != "addition":
        return None
    return AdditionTask(digits=d["digits"], vocab_size=d["vocab_size"])


def save_tokenizer(folder: str | Path) -> None:
    """A character-level Hugging Face tokenizer for the task's vocabulary."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(VOCAB, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                            pad_token="<pad>").save_pretrained(str(folder))
