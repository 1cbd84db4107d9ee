"""Text in, text out: the tokenizer of the model a bundle was compiled from, and decoding that streams whole
characters.

A model folder with Hugging Face tokenizer files uses them (loaded with ``trust_remote_code=False``);
a byte-level built-in (``builtin:pylm``, whose task is text) maps bytes to ids one to one; a model
without either has no tokenizer, and ``--prompt-ids`` is the way in.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from flightc.errors import UnsupportedError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


@dataclass
class TextCodec:
    """Encodes prompts and decodes generated ids; ``eos`` are the ids that end a generation."""

    name: str
    encode_fn: Callable[[str], list[int]]
    decode_fn: Callable[[list[int]], str]
    eos: frozenset[int] = field(default_factory=frozenset)

    def encode(self, text: str) -> list[int]:
        ids = [int(t) for t in self.encode_fn(text)]
        if not ids:
            raise UnsupportedError(f"prompt {text!r} encodes to no tokens with the {self.name} tokenizer")
        return ids

    def decode(self, ids: list[int]) -> str:
        return self.decode_fn(list(ids))

    def stream(self, ids: Iterable[int]) -> Iterator[str]:
        """The text each new id adds, holding back an incomplete multi-byte character (shown as U+FFFD by the
        decoder) until the ids that complete it arrive."""
        seen: list[int] = []
        shown = ""
        for t in ids:
            seen.append(int(t))
            text = self.decode(seen)
            if text.endswith("\ufffd"):
                continue
            if len(text) > len(shown):  # (a decoder that rewrites earlier text, rarely, cannot unprint it)
                yield text[len(shown):]
            shown = text


def _hf_codec(folder: Path) -> TextCodec:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)  # no code from the folder runs
    ids: list[int] = []
    for eos in (tok.eos_token_id, _config_value(folder, "eos_token_id")):  # the tokenizer's and the model's EOS
        ids += eos if isinstance(eos, list) else [] if eos is None else [eos]
    bos = _config_value(folder, "bos_token_id")

    def encode(text: str) -> list[int]:  # the model's BOS first, as it was trained, if the tokenizer leaves it out
        out = list(tok(text)["input_ids"])
        return ([bos] if isinstance(bos, int) and out[:1] != [bos] else []) + out

    return TextCodec(f"{folder.name} (Hugging Face)", encode, lambda ids: tok.decode(ids, skip_special_tokens=True),
                     frozenset(int(i) for i in ids))


def _config_value(folder: Path, key: str):
    import json

    try:
        return json.loads((folder / "config.json").read_text()).get(key)
    except (OSError, ValueError):
        return None


def _byte_codec(name: str, vocab: int) -> TextCodec:
    from flightc.tasks.text import ascii_bytes

    return TextCodec(f"{name} (bytes)", lambda s: list(ascii_bytes(s)),
                     lambda ids: bytes(i for i in ids if 0 <= i < min(vocab, 256)).decode("utf-8", "replace"))


def load_codec(source: str | Path) -> TextCodec:
    """The tokenizer of a model spec (a Hugging Face folder or ``builtin:NAME``), or a folder of tokenizer files."""
    from flightc.models.builtin import is_builtin, model_input, model_task
    from flightc.tasks.text import TextTask

    folder = model_input(source) if is_builtin(source) else Path(source)
    if isinstance(folder, Path) and any((folder / f).exists() for f in TOKENIZER_FILES):
        return _hf_codec(folder)
    task = model_task(source) if isinstance(folder, Path) and folder.is_dir() else None
    if isinstance(task, TextTask):
        return _byte_codec(str(source), task.vocab_size)
    raise UnsupportedError(f"{source}: no tokenizer (no {' or '.join(TOKENIZER_FILES)}, not a byte-level model); "
                           f"give token ids with --prompt-ids, or a tokenizer folder with --tokenizer")


def bundle_codec(bundle, tokenizer: str | Path | None = None) -> TextCodec:
    """The tokenizer for a bundle: ``tokenizer`` if given, else that of the model the bundle was compiled from."""
    source = tokenizer or bundle.manifest.source
    if not source:
        raise UnsupportedError("the bundle does not name the model it was compiled from; pass --tokenizer FOLDER")
    return load_codec(source)
