"""Character-level word encoders: sizes, padding invariance, and options that fail with their key."""
from __future__ import annotations

import pytest
import torch

from nlpseq.data.collate import pad_ids
from nlpseq.errors import ConfigError
from nlpseq.nn.char_encoder import CharEncoder
from nlpseq.utils.build import build

WORDS = [[5, 6, 7], [8], [9, 5, 5, 5, 6, 7, 8], [2, 3]]


@pytest.mark.parametrize("kind,size", [("cnn", 30), ("lstm", 40)])
def test_sizes_and_padding_never_changes_a_word(kind, size):
    torch.manual_seed(0)
    enc = CharEncoder(12, kind=kind, dim=6, hidden_size=size // (2 if kind == "lstm" else 1), kernel_size=3).eval()
    assert enc.output_size == size
    ids, lengths = pad_ids(WORDS)
    out = enc(ids, lengths)
    assert out.shape == (4, size)
    for i, w in enumerate(WORDS):
        alone = enc(torch.tensor([w]), torch.tensor([len(w)]))
        wide = torch.nn.functional.pad(torch.tensor([w]), (0, 5))  # extra padding
        assert torch.allclose(alone[0], out[i], atol=1e-6)
        assert torch.allclose(enc(wide, torch.tensor([len(w)]))[0], out[i], atol=1e-6)
    assert enc(torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, dtype=torch.long)).shape == (0, size)


def test_gradients_reach_character_embeddings():
    enc = CharEncoder(12, kind="cnn")
    ids, lengths = pad_ids(WORDS)
    enc(ids, lengths).sum().backward()
    assert enc.embed.weight.grad[5].abs().sum() > 0 and enc.embed.weight.grad[0].abs().sum() == 0


@pytest.mark.parametrize("cfg,key", [({"kind": "gru"}, "model.char_encoder.kind"),
                                     ({"kernel_size": 4}, "model.char_encoder.kernel_size"),
                                     ({"hidden_size": 0}, "model.char_encoder.hidden_size"),
                                     ({"filters": 3}, "model.char_encoder.filters")])
def test_bad_options_name_their_key(cfg, key):
    with pytest.raises(ConfigError, match=key):
        build(CharEncoder, cfg, "model.char_encoder", num_chars=10)
