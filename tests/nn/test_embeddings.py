"""TokenEmbedding: padding rows stay zero, and word dropout replaces real tokens by <unk> in training only."""
import pytest
import torch

from nlpseq.errors import ConfigError, NlpseqError
from nlpseq.nn.embeddings import TokenEmbedding


def test_word_dropout_replaces_real_tokens_by_unk_in_training_only():
    torch.manual_seed(0)
    emb = TokenEmbedding(50, dim=4, word_dropout=0.3, unk_id=1)
    ids = torch.randint(2, 50, (64, 40))
    ids[:, 30:] = 0  # padding
    seen = []
    emb.embed.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    emb.train()
    emb(ids)
    dropped = seen[-1] != ids
    assert (seen[-1][dropped] == 1).all()                 # only ever to <unk>
    assert not dropped[:, 30:].any()                      # padding is never touched
    assert abs(dropped[:, :30].float().mean().item() - 0.3) < 0.03
    emb.eval()
    emb(ids)
    assert torch.equal(seen[-1], ids)                     # evaluation reads the tokens as they are


def test_no_word_dropout_by_default_and_bad_values_are_errors():
    emb = TokenEmbedding(10, dim=2).train()
    ids = torch.randint(2, 10, (3, 5))
    assert torch.equal(emb(ids), emb.embed(ids))          # no dropout configured: the plain lookup
    with pytest.raises((ConfigError, NlpseqError, ValueError), match="word_dropout"):
        TokenEmbedding(10, word_dropout=1.0)
