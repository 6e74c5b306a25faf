"""The Wan2.1 VAE: diffusers' ``AutoencoderKLWan`` with the official latent normalisation (spec §5.2).

diffusers returns the un-normalised mean; the official latents are ``(mu - mean) * (1/std)`` and decode
de-normalises with ``z / (1/std) + mean`` (the same expressions, for the same rounding). Decoding runs
latent frame by latent frame with the causal cache (1 pixel frame for latent 0, then 4 per latent), which
is bit-exact with a one-shot decode, so frames can be handed on as they are decoded.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from diffusers import AutoencoderKLWan


class WanVae:
    """Encode [-1,1] pixels ``[B, 3, F, H, W]`` to normalised latents ``[B, 16, T, H/8, W/8]`` and back."""

    def __init__(self, model: AutoencoderKLWan) -> None:
        self.model = model.eval().requires_grad_(False)
        config = model.config
        self.mean = torch.tensor(config.latents_mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
        self.inv_std = 1.0 / torch.tensor(config.latents_std, dtype=torch.float32).view(1, -1, 1, 1, 1)

    @property
    def device(self) -> torch.device:
        return self.model.decoder.conv_in.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.decoder.conv_in.weight.dtype

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean.to(like.device), self.inv_std.to(like.device)

    @torch.no_grad()
    def encode_raw(self, video: torch.Tensor) -> torch.Tensor:
        """The un-normalised posterior mean (what diffusers' ``latent_dist.mode()`` gives), float32."""
        return self.model.encode(video.to(self.device, self.dtype)).latent_dist.mode().float()

    def normalize(self, mu: torch.Tensor) -> torch.Tensor:
        mean, inv_std = self._stats(mu)
        return (mu - mean) * inv_std

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Official ``WanVAE.encode``: the posterior mean (never a sample), normalised."""
        return self.normalize(self.encode_raw(video))

    @torch.no_grad()
    def decode_stream(self, latents: torch.Tensor, clamp: bool = True) -> Iterator[torch.Tensor]:
        """Yield pixel frames ``[B, 3, n, H, W]`` (float32, clamped to [-1, 1]) latent frame by latent frame."""
        mean, inv_std = self._stats(latents)
        z = (latents.float() / inv_std + mean).to(self.device, self.dtype)
        vae = self.model
        vae.clear_cache()
        try:
            z = vae.post_quant_conv(z)
            for index in range(z.shape[2]):
                vae._conv_idx = [0]
                frames = vae.decoder(z[:, :, index : index + 1], feat_cache=vae._feat_map,
                                     feat_idx=vae._conv_idx, first_chunk=index == 0).float()
                yield frames.clamp(-1.0, 1.0) if clamp else frames
        finally:
            vae.clear_cache()

    def decode(self, latents: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        return torch.cat(list(self.decode_stream(latents, clamp)), dim=2)


def vae_config_from_state_dict(official: dict[str, torch.Tensor]) -> dict:
    """``AutoencoderKLWan`` config for an official ``WanVAE_`` state dict: the Wan2.1 architecture, with the
    base width and latent size read from the weights (so tiny test VAEs load the same way)."""
    base_dim = official["encoder.conv1.weight"].shape[0]
    z_dim = official["conv2.weight"].shape[0]
    return dict(base_dim=base_dim, z_dim=z_dim)
