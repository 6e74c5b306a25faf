"""umT5 from the official T5 encoder keys equals the official encoder's equations; prompts cached."""

from __future__ import annotations

import math

import pytest
import torch

from it_weights import random_tensors, umt5_shapes, write_tokenizer
from model.infinitetalk.loading import build_umt5
from model.infinitetalk.text import PromptEncoder, clean_prompt


def official_t5_encoder(state: dict, ids: torch.Tensor, mask: torch.Tensor, heads: int) -> torch.Tensor:
    """Wan's ``T5Encoder`` forward (wan/modules/t5.py), written out for the test."""

    def norm(x, weight):
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))

    def bucket(rel, buckets=32, max_dist=128):
        half = buckets // 2
        out = (rel > 0).long() * half
        rel = rel.abs()
        exact = half // 2
        large = exact + (torch.log(rel.float() / exact) / math.log(max_dist / exact) * (half - exact)).long()
        return out + torch.where(rel < exact, rel, large.clamp(max=half - 1))

    x = state["token_embedding.weight"][ids]
    length = ids.shape[1]
    rel = torch.arange(length)[None] - torch.arange(length)[:, None]
    layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    for i in range(layers):
        p = lambda name: state[f"blocks.{i}.{name}"]  # noqa: E731
        bias = p("pos_embedding.embedding.weight")[bucket(rel)].permute(2, 0, 1)[None]
        bias = bias.masked_fill(mask.view(1, 1, 1, -1) == 0, torch.finfo(x.dtype).min)
        h = norm(x, p("norm1.weight"))
        q, k, v = (h @ p(f"attn.{n}.weight").T for n in "qkv")
        q, k, v = (t.view(1, length, heads, -1) for t in (q, k, v))
        attn = (torch.einsum("binc,bjnc->bnij", q, k) + bias).softmax(-1)
        x = x + torch.einsum("bnij,bjnc->binc", attn, v).reshape(1, length, -1) @ p("attn.o.weight").T
        h = norm(x, p("norm2.weight"))
        gate = torch.nn.functional.gelu(h @ p("ffn.gate.0.weight").T, approximate="tanh")
        x = x + ((h @ p("ffn.fc1.weight").T) * gate) @ p("ffn.fc2.weight").T
    return norm(x, state["norm.weight"])


def test_umt5_matches_the_official_encoder_equations():
    state = random_tensors(umt5_shapes(vocab=50, dim=32, heads=4), seed=3)
    model = build_umt5(dict(state))
    ids = torch.tensor([[5, 9, 1, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0, 0, 0]])
    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=mask).last_hidden_state
    theirs = official_t5_encoder(state, ids, mask, heads=4)
    assert (ours - theirs)[:, :3].abs().max() < 1e-4


def test_prompts_are_cleaned_encoded_once_and_cached(tmp_path):
    vocab = write_tokenizer(tmp_path / "tok")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "tok"), local_files_only=True)
    model = build_umt5(random_tensors(umt5_shapes(vocab, dim=32), seed=4))
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    encoder = PromptEncoder(tokenizer, model, text_len=16)
    first = encoder("A person  is talking.")
    assert first.shape[1] == 32 and 2 <= first.shape[0] <= 16
    assert torch.equal(encoder("A person  is talking."), first) and len(calls) == 1
    encoder.release()
    assert torch.equal(encoder("A person  is talking."), first)
    with pytest.raises(RuntimeError, match="released"):
        encoder("another prompt")
    assert clean_prompt("  a &amp;amp; b\n\tc ") == "a & b c"
