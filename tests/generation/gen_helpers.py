"""Small builders shared by the generation tests (tiny tokenizers, models and data modules)."""
from __future__ import annotations

from pathlib import Path

import torch

from nlpseq.data.lm import LanguageModelDataModule
from nlpseq.models.language_model import LanguageModel
from nlpseq.text.tokenizer import TextTokenizer

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"


def char_tokenizer(text: str = TEXT) -> TextTokenizer:
    return TextTokenizer.train([text], kind="char")


def tiny_model(text: str = TEXT, conditions=None, hidden: int = 16, layers: int = 2, cell: str = "lstm",
               seed: int = 0, **kw) -> LanguageModel:
    torch.manual_seed(seed)
    return LanguageModel(char_tokenizer(text).to_json(), conditions=conditions,
                         embedding={"dim": kw.pop("dim", 8)},
                         decoder={"hidden_size": hidden, "num_layers": layers, "cell": cell, "dropout": 0.0},
                         samples={"prompts": []}, **kw).eval()


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def datamodule(tmp_path: Path, train_text: str, valid_text: str | None = None, name: str = "train.txt",
               **kw) -> LanguageModelDataModule:
    train = write(tmp_path / name, train_text)
    valid = write(tmp_path / ("valid" + Path(name).suffix), valid_text) if valid_text is not None else None
    kw.setdefault("tokenizer", {"kind": "char"})
    dm = LanguageModelDataModule(train=str(train), validation=str(valid) if valid else None, **kw)
    dm.prepare(None)
    return dm


