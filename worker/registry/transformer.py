"""A tiny decoder-only transformer (pre-LN, causal self-attention) that classifies a token
sequence from its last position.

Attention is written out (scores, causal mask, softmax) rather than calling
``scaled_dot_product_attention``: PyTorch's fused CPU kernel has no forward-mode derivative,
so forward-over-reverse Hessian-vector products (``jvp`` of ``grad``) would fail through it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dynascope.server.schemas.model_specs import TransformerSpec
from dynascope.worker.registry.dataset_types import DataShape


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t attends to positions ≤ t only."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.attention_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, d_model = x.shape
        head_dim = d_model // self.n_heads
        q, k, v = (
            part.reshape(batch, length, self.n_heads, head_dim).transpose(1, 2)
            for part in self.qkv(x).split(d_model, dim=2)
        )
        scores = q @ k.transpose(-2, -1) / math.sqrt(head_dim)
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
        weights = self.attention_dropout(scores.softmax(dim=-1))
        out = (weights @ v).transpose(1, 2).reshape(batch, length, d_model)
        return self.proj(out)


class TransformerBlock(nn.Module):
    """Pre-LN block: x + attention(LN(x)), then x + MLP(LN(x)) with a GELU MLP."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(d_model)
        self.attention = CausalSelfAttention(d_model, n_heads, dropout)
        self.mlp_norm = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))
        self.residual_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.residual_dropout(self.attention(self.attention_norm(x)))
        return x + self.residual_dropout(self.mlp(self.mlp_norm(x)))


class DecoderTransformer(nn.Module):
    """Token and learned position embeddings, pre-LN causal blocks, a final LayerNorm and a
    linear head read at the last position: (N, seq_len) int64 -> (N, num_outputs)."""

    def __init__(
        self,
        *,
        vocab_size: int,
        seq_len: int,
        num_outputs: int,
        d_model: int,
        n_heads: int,
        n_layers: int,
        d_ff: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(seq_len, d_model)
        self.embedding_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, n_heads, d_ff, dropout) for _ in range(n_layers)
        )
        self.final_norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_outputs)

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """The final-normalised hidden state at every position, shape (N, seq_len, d_model);
        the state at position t depends on tokens[:, : t + 1] only."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        hidden = self.embedding_dropout(
            self.token_embedding(tokens) + self.position_embedding(positions)
        )
        for block in self.blocks:
            hidden = block(hidden)
        return self.final_norm(hidden)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden_states(tokens)[:, -1])


def build_transformer(spec: TransformerSpec, dataset: DataShape) -> nn.Module:
    """The decoder-only transformer for a token dataset (vocabulary and sequence length
    from the dataset); the MLP width is ``d_ff`` or 4·d_model."""
    if dataset.vocab_size is None or len(dataset.input_shape) != 1:
        raise ValueError("the transformer needs a token dataset with a vocabulary")
    return DecoderTransformer(
        vocab_size=dataset.vocab_size,
        seq_len=dataset.input_shape[0],
        num_outputs=dataset.num_outputs,
        d_model=spec.d_model,
        n_heads=spec.n_heads,
        n_layers=spec.n_layers,
        d_ff=spec.d_ff or 4 * spec.d_model,
        dropout=spec.dropout,
    )
