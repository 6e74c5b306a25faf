"""Prompt embeddings: umT5-XXL encoder (transformers ``UMT5EncoderModel``), Wan's tokenisation, cached.

Official ``T5EncoderModel``: clean the text (ftfy when installed, double HTML unescape, whitespace
collapse), tokenize to 512 with special tokens, run the encoder with the padding mask, keep the true
length. The DiT zero-pads to 512 again itself. Prompts are fixed per session, so each is encoded once.
"""

from __future__ import annotations

import html
import re

import torch

DEFAULT_PROMPT = "A person is talking."
# The official default negative prompt (wan/configs/wan_multitalk_14B.py sample_neg_prompt).
NEGATIVE_PROMPT = (
    "bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, "
    "overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, "
    "poorly drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers, still "
    "picture, messy background, three legs, many people in the background, walking backwards")
TEXT_LEN = 512


def clean_prompt(text: str) -> str:
    try:
        import ftfy  # optional: fixes mojibake; a no-op on ordinary text

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


class PromptEncoder:
    """``[prompt] -> [L_i, 4096]`` embeddings, each computed once."""

    def __init__(self, tokenizer, model, text_len: int = TEXT_LEN) -> None:
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False) if model is not None else None
        self.text_len = text_len
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, prompt: str) -> torch.Tensor:
        if prompt not in self._cache:
            if self.model is None:
                raise RuntimeError("the text encoder was released; only cached prompts are available")
            tokens = self.tokenizer([clean_prompt(prompt)], padding="max_length", truncation=True,
                                    max_length=self.text_len, add_special_tokens=True, return_tensors="pt")
            device = next(self.model.parameters()).device
            ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
            self._cache[prompt] = hidden[0, : int(mask.sum())].float().cpu()
        return self._cache[prompt]

    def release(self) -> None:
        """Drop the encoder (5.7B parameters) once the session's prompts are cached."""
        self.model = None
