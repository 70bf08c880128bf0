"""The tiny model's text encoder: word embeddings over the domain vocabulary and a small transformer.

Word order matters in this domain ("a red circle on a blue background" vs "a blue circle on a red
background"), so a bag of words would not do: positions are embedded and two self-attention layers
bind adjectives to their nouns. Unknown words map to <unk> and prompts are truncated to
``max_words`` words, so no prompt can crash the encoder. Like Wan's UMT5 embeddings, rows past the
prompt are zeros; an empty prompt (the CFG negative) is just the <bos> row.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from .vocabulary import BACKGROUND_WORDS, COLOR_NAMES, DIRECTION_WORDS, SHAPES

SPECIAL = ("<pad>", "<unk>", "<bos>")
PAD, UNK, BOS = 0, 1, 2


def domain_vocabulary() -> list[str]:
    words = {"a", "an", "and", "on", "background", "moving", "staying", "still"}
    words |= set(COLOR_NAMES) | set(SHAPES) | set(BACKGROUND_WORDS.values())
    words |= {w for phrase in DIRECTION_WORDS.values() for w in phrase.split()}
    return list(SPECIAL) + sorted(words)


class Tokenizer:
    def __init__(self, vocabulary: list[str], max_words: int = 24):
        self.vocabulary = vocabulary
        self.index = {word: i for i, word in enumerate(vocabulary)}
        self.max_words = max_words

    @property
    def length(self) -> int:
        return self.max_words + 1  # <bos> first

    def words(self, text: str) -> list[str]:
        return re.findall(r"[a-z]+", text.lower())[: self.max_words]

    def unknown_words(self, text: str) -> list[str]:
        return [w for w in re.findall(r"[a-z]+", text.lower()) if w not in self.index]

    def __call__(self, texts: list[str]) -> torch.Tensor:
        """(B, max_words + 1) int64 ids: <bos>, the words, <pad>s."""
        ids = torch.full((len(texts), self.length), PAD, dtype=torch.long)
        for row, text in enumerate(texts):
            tokens = [BOS] + [self.index.get(w, UNK) for w in self.words(text)]
            ids[row, : len(tokens)] = torch.tensor(tokens)
        return ids


class TextEncoder(nn.Module):
    def __init__(self, vocabulary_size: int, dim: int = 64, layers: int = 2, heads: int = 4, length: int = 25):
        super().__init__()
        self.word_embedding = nn.Embedding(vocabulary_size, dim)
        self.position_embedding = nn.Parameter(torch.zeros(1, length, dim))
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=2 * dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.position_embedding, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, L) → embeddings (B, L, dim), zero past the prompt."""
        padding = ids == PAD  # (B, L)
        hidden = self.word_embedding(ids) + self.position_embedding[:, : ids.shape[1]]
        hidden = self.norm(self.encoder(hidden, src_key_padding_mask=padding))
        return hidden.masked_fill(padding[..., None], 0.0)
