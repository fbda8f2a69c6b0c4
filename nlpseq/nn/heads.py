"""Output heads: a pooling classifier (many-to-one) and a per-token tagging head (many-to-many)."""
from __future__ import annotations

import torch
from torch import nn

from nlpseq.errors import check_choice, check_float, check_int
from nlpseq.nn.dropout import Dropout

POOLINGS = ("last", "mean", "max", "attention")


class PoolingClassifier(nn.Module):
    """Pools encoder states over time (padding excluded), then dropout and a linear layer to class logits."""

    def __init__(self, input_size: int, num_classes: int, pooling: str = "max", dropout: float = 0.0,
                 hidden_size: int = 0):
        super().__init__()
        check_int("num_classes", num_classes, minimum=1)
        check_choice("pooling", pooling, POOLINGS)
        check_float("dropout", dropout, 0.0, 1.0, high_open=True)
        check_int("hidden_size", hidden_size, minimum=0)
        self.pooling = pooling
        if pooling == "attention":
            self.score = nn.Linear(input_size, 1)
        self.dropout = Dropout(dropout)
        layers: list[nn.Module] = []
        if hidden_size:
            layers += [nn.Linear(input_size, hidden_size), nn.Tanh(), Dropout(dropout)]
            input_size = hidden_size
        layers.append(nn.Linear(input_size, num_classes))
        self.out = nn.Sequential(*layers)

    def pool(self, states: torch.Tensor, mask: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
        if self.pooling == "last":
            return final
        m = mask.unsqueeze(-1)
        if self.pooling == "mean":
            return (states * m).sum(1) / m.sum(1).clamp(min=1)
        if self.pooling == "max":
            return states.masked_fill(~m, float("-inf")).amax(1)
        scores = self.score(states).squeeze(-1).masked_fill(~mask, float("-inf"))
        return (torch.softmax(scores, dim=-1).unsqueeze(-1) * states).sum(1)

    def forward(self, states: torch.Tensor, mask: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(self.pool(states, mask, final)))


class TaggingHead(nn.Module):
    """Per-token dropout and linear projection to tag scores (emissions)."""

    def __init__(self, input_size: int, num_tags: int, dropout: float = 0.0):
        super().__init__()
        check_int("num_tags", num_tags, minimum=1)
        check_float("dropout", dropout, 0.0, 1.0, high_open=True)
        self.dropout = Dropout(dropout)
        self.proj = nn.Linear(input_size, num_tags)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.proj(self.dropout(states))
