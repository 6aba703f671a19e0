# SPDX-License-Identifier: Apache-2.0
"""A tiny decoder-only transformer in numpy whose KV cache is paged.

Fixed random weights from a seed (no training: the point is the cache, not
the text), pre-norm blocks with RMSNorm, rotary positions, causal multi-head
attention and a SiLU MLP. Keys and values live in a paged cache: an array
of blocks, [block, layer, k/v, slot, head, head_dim], addressed through a
block table (the list of block ids that hold a sequence's positions in
order), as in vLLM's PagedAttention. Whose array that is (a private one, or
one shared by every engine process of the node) is the caller's business.

Bit-identical results: the prompt is computed in block-aligned chunks, one
per block (the trailing partial block is one chunk). A chunk's outputs
depend only on its tokens, its position and the KV of the blocks before it,
through numpy operations of the same shapes on the same inputs: so a block
computed by another process, read back from the shared cache, gives exactly
the bits a full recompute in this process gives, and so do the logits.
"""
from dataclasses import dataclass

import numpy as np

F32 = np.float32


@dataclass(frozen=True)
class Config:
    vocab: int = 512
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 512
    max_positions: int = 8192
    seed: int = 1234

    @property
    def head_dim(self):
        return self.d_model // self.n_heads

    def kv_block_shape(self, block_size):
        """Shape of one block of the paged cache (float32)."""
        return (self.n_layers, 2, block_size, self.n_heads, self.head_dim)

    def check(self):
        if self.d_model % self.n_heads or self.head_dim % 2:
            raise ValueError(f"d_model {self.d_model} must split into n_heads "
                             f"{self.n_heads} heads of an even size")
        for f in ("vocab", "d_model", "n_layers", "n_heads", "d_ff", "max_positions"):
            if getattr(self, f) <= 0:
                raise ValueError(f"{f} must be > 0, not {getattr(self, f)}")


def _rms_norm(x, g):
    ms = np.mean(x * x, axis=-1, keepdims=True)
    return x / np.sqrt(ms + F32(1e-6)) * g


class TinyLM:
    """The model: weights, and a forward pass over a paged KV cache."""

    def __init__(self, cfg=Config()):
        cfg.check()
        self.cfg = cfg
        rng = np.random.default_rng(cfg.seed)
        d, ff, L = cfg.d_model, cfg.d_ff, cfg.n_layers

        def w(rows, cols, scale=1.0):
            return (rng.standard_normal((rows, cols)) * (scale / np.sqrt(rows))).astype(F32)

        self.embed = rng.standard_normal((cfg.vocab, d)).astype(F32)
        self.layers = []
        for _ in range(L):
            self.layers.append(dict(
                attn_norm=(1 + 0.1 * rng.standard_normal(d)).astype(F32),
                wqkv=w(d, 3 * d),
                wo=w(d, d, 1 / np.sqrt(2 * L)),
                mlp_norm=(1 + 0.1 * rng.standard_normal(d)).astype(F32),
                w1=w(d, ff),
                w2=w(ff, d, 1 / np.sqrt(2 * L)),
            ))
        self.final_norm = np.ones(d, F32)
        self.unembed = w(d, cfg.vocab, 4.0)
        # Rotary tables, computed once in float64 and rounded: the same
        # values in every process.
        hd = cfg.head_dim
        inv = 1.0 / (10000.0 ** (np.arange(0, hd, 2) / hd))
        ang = np.arange(cfg.max_positions)[:, None] * inv[None, :]
        self.cos = np.cos(ang).astype(F32)
        self.sin = np.sin(ang).astype(F32)

    def _rope(self, x, pos):
        # x: [n, H, hd]; rotate pairs (even, odd) by the position's angles.
        c = self.cos[pos][:, None, :]
        s = self.sin[pos][:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * c - x1 * s
        out[..., 1::2] = x0 * s + x1 * c
        return out

    def forward(self, tokens, start, kv, table, block_size, logits=True):
        """Runs tokens at positions start.. start+len(tokens)-1.

        Writes their keys and values into the cache `kv` ([blocks, layers,
        2, block_size, heads, head_dim]) at the blocks `table` names, reads
        the keys and values of every earlier position from it, and returns
        the logits of the LAST token ([vocab], float32), or None when
        `logits` is false. The tokens must lie in one block (one chunk).
        """
        cfg = self.cfg
        n = len(tokens)
        if n == 0 or start // block_size != (start + n - 1) // block_size:
            raise ValueError(f"a chunk is 1..block_size tokens inside one block, "
                             f"not {n} tokens from position {start}")
        if start + n > cfg.max_positions:
            raise ValueError(f"position {start + n - 1} is beyond max_positions "
                             f"{cfg.max_positions}")
        T = start + n
        nb = (T + block_size - 1) // block_size
        if len(table) < nb:
            raise ValueError(f"block table has {len(table)} blocks, positions up "
                             f"to {T - 1} need {nb}")
        blk, off = int(table[start // block_size]), start % block_size
        used = np.asarray(table[:nb], dtype=np.int64)
        H, hd = cfg.n_heads, cfg.head_dim
        pos = np.arange(start, T)
        tok = np.asarray(tokens, dtype=np.int64)
        if tok.min() < 0 or tok.max() >= cfg.vocab:
            raise ValueError(f"token ids must be in 0..{cfg.vocab - 1}")
        # Causal mask of this chunk's queries over all T keys.
        mask = np.arange(T)[None, :] > pos[:, None]
        scale = F32(1.0 / np.sqrt(hd))

        x = self.embed[tok]
        for li, p in enumerate(self.layers):
            h = _rms_norm(x, p["attn_norm"])
            qkv = h @ p["wqkv"]
            q = self._rope(qkv[:, :cfg.d_model].reshape(n, H, hd), pos)
            k = self._rope(qkv[:, cfg.d_model:2 * cfg.d_model].reshape(n, H, hd), pos)
            v = qkv[:, 2 * cfg.d_model:].reshape(n, H, hd)
            kv[blk, li, 0, off:off + n] = k
            kv[blk, li, 1, off:off + n] = v
            # Gather this sequence's keys and values from its blocks.
            K = kv[used, li, 0].reshape(nb * block_size, H, hd)[:T]
            V = kv[used, li, 1].reshape(nb * block_size, H, hd)[:T]
            qh = np.ascontiguousarray(q.transpose(1, 0, 2))       # [H, n, hd]
            kh = np.ascontiguousarray(K.transpose(1, 2, 0))       # [H, hd, T]
            vh = np.ascontiguousarray(V.transpose(1, 0, 2))       # [H, T, hd]
            s = (qh @ kh) * scale                                 # [H, n, T]
            s[:, mask] = -np.inf
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            a = (s @ vh).transpose(1, 0, 2).reshape(n, cfg.d_model)
            x = x + np.ascontiguousarray(a) @ p["wo"]
            h = _rms_norm(x, p["mlp_norm"])
            u = h @ p["w1"]
            u = u / (F32(1) + np.exp(-u))
            x = x + u @ p["w2"]
        if not logits:
            return None
        last = _rms_norm(x[-1:], self.final_norm)
        return (last @ self.unembed)[0]

    def prefill(self, prompt, start, kv, table, block_size, on_block=None):
        """Computes prompt[start:] chunk by chunk (start block-aligned).

        Calls on_block(i) after the KV of each complete block i is written
        (the caller registers it then), and returns the last token's logits.
        """
        if start % block_size or not 0 <= start < len(prompt):
            raise ValueError(f"prefill start {start} must be block-aligned and "
                             f"before the last prompt token ({len(prompt)})")
        out = None
        for c in range(start, len(prompt), block_size):
            chunk = prompt[c:c + block_size]
            last = c + block_size >= len(prompt)
            out = self.forward(chunk, c, kv, table, block_size, logits=last)
            if len(chunk) == block_size and on_block is not None:
                on_block(c // block_size)
        return out

    def decode(self, first_logits, n_new, pos, kv, table, block_size):
        """Greedy decoding of n_new tokens after position pos-1.

        Returns (tokens, logits [n_new, vocab]): logits[i] are the logits
        that chose tokens[i]. The last token is not run (no one needs its
        KV), so the cache needs room for pos + n_new - 1 positions.
        """
        toks, logits = [], [first_logits]
        for i in range(n_new):
            t = int(np.argmax(logits[-1]))
            toks.append(t)
            if i + 1 < n_new:
                logits.append(self.forward([t], pos + i, kv, table, block_size))
        return toks, np.stack(logits[:n_new]) if n_new else np.zeros((0, self.cfg.vocab), F32)


def full_recompute(model, prompt, n_new, block_size):
    """The reference: one process, a private cache, nothing reused."""
    total = len(prompt) + max(n_new - 1, 0)
    nb = (total + block_size - 1) // block_size
    kv = np.zeros((nb,) + model.cfg.kv_block_shape(block_size), F32)
    table = list(range(nb))
    first = model.prefill(prompt, 0, kv, table, block_size)
    return model.decode(first, n_new, len(prompt), kv, table, block_size)
