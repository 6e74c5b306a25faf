"""Generators chosen by name. Each is imported only when built, so heavy imports stay out of the
processes and commands that do not need them."""

from __future__ import annotations

import importlib

from model.base import Generator
from model.errors import InputError
from model.serving import ServingNeeds

# name -> (module, factory, one-line description)
GENERATORS: dict[str, tuple[str, str, str]] = {
    "lite": ("model.lite", "build", "CPU mouth re-animation from the speech; no downloads (default)"),
    "infinitetalk": ("model.infinitetalk", "build", "the InfiniteTalk 14B DiT; needs --weights and a GPU"),
    "passthrough": ("model.passthrough", "build", "the source frames unchanged (a fallback and for tests)"),
    "simulated": ("model.simulated", "build", "a simulated GPU machine (--simulate h100x8): costs what the "
                                              "planner predicts, returns the reference"),
}


# name -> what the server needs to serve it; a name not listed (a test's generator) gets the defaults:
# a CPU generator with an instance per session on the host worker processes, warmed up on the session's
# source.
SERVING: dict[str, ServingNeeds] = {
    # It re-animates lips and jaw only: the face is all it needs, and the smallest region is the cheapest.
    "lite": ServingNeeds(region="face", any_size=True),
    "infinitetalk": ServingNeeds(
        device="cuda", shared=True, shardable=True, fallback="lite",
        required_options=(("weights", "the infinitetalk generator needs --weights DIR (the official release "
                                      "layout; see README)"),)),
    "passthrough": ServingNeeds(worker="thread", warm_up=False, any_size=True),  # nothing lazy, next to no cost
    # One simulated machine shared by every session, so sessions queue for it as for a real GPU; it only
    # sleeps (a thread does), and its costs are the planner's priors (nothing to warm).
    "simulated": ServingNeeds(worker="thread", shared=True, warm_up=False),
}


def serving_needs(name: str) -> ServingNeeds:
    return SERVING.get(name, ServingNeeds())


def is_shardable(name: str) -> bool:
    """Whether ``name`` runs on a torch.distributed process group (--gpus/--parallel)."""
    return serving_needs(name).shardable


def shardable_names() -> list[str]:
    return sorted(name for name, needs in SERVING.items() if needs.shardable)


def generator_names() -> list[str]:
    return list(GENERATORS)


def build_generator(name: str, **options) -> Generator:
    """Build generator ``name`` with its options (e.g. ``weights=``, ``device=``)."""
    if name not in GENERATORS:
        raise InputError(f"unknown generator {name!r}: accepted are {', '.join(GENERATORS)}")
    module_name, factory, _ = GENERATORS[name]
    module = importlib.import_module(module_name)
    return getattr(module, factory)(**options)
