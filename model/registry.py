"""Generators chosen by name. Each is imported only when built, so heavy imports stay out of the
processes and commands that do not need them."""

from __future__ import annotations

import importlib

from model.base import Generator
from streaming.errors import InputError

# name -> (module, factory, one-line description)
GENERATORS: dict[str, tuple[str, str, str]] = {
    "lite": ("model.lite", "build", "CPU mouth re-animation from the speech; no downloads (default)"),
    "infinitetalk": ("model.infinitetalk", "build", "the InfiniteTalk 14B DiT; needs --weights and a GPU"),
    "passthrough": ("model.passthrough", "build", "the source frames unchanged (a fallback and for tests)"),
    "simulated": ("model.simulated", "build", "a simulated GPU machine (--simulate h100x8): costs what the "
                                              "planner predicts, returns the reference"),
}
# Generators that run on a torch.distributed process group (--gpus/--parallel): every rank builds one,
# and it shards its work over the default group by itself (model/infinitetalk).
SHARDABLE: set[str] = {"infinitetalk"}


def is_shardable(name: str) -> bool:
    return name in SHARDABLE


def shardable_names() -> list[str]:
    return sorted(SHARDABLE)


def generator_names() -> list[str]:
    return list(GENERATORS)


def build_generator(name: str, **options) -> Generator:
    """Build generator ``name`` with its options (e.g. ``weights=``, ``device=``)."""
    if name not in GENERATORS:
        raise InputError(f"unknown generator {name!r}: accepted are {', '.join(GENERATORS)}")
    module_name, factory, _ = GENERATORS[name]
    module = importlib.import_module(module_name)
    return getattr(module, factory)(**options)
