"""What a server needs to know about a generator before building it, declared next to its registry entry.

The server reads this record and never a generator's name: where the generator runs (device, a thread or
a process of its own), whether one instance serves every session (a GPU model loaded once), which build
options it cannot start without, whether a warm-up chunk measures its warm cost before the first real
chunk, and which cheaper generator takes the chunks it cannot afford. What is only known once it is built
(its audio lookahead, its tier ladder and prior costs) comes from the built generator itself
(streaming/workers.py GeneratorProfile).
"""

from __future__ import annotations

import dataclasses

from model.errors import InputError

DEVICES = ("cpu", "cuda")
WORKER_MODES = ("thread", "process")


@dataclasses.dataclass(frozen=True)
class ServingNeeds:
    device: str = "cpu"
    # "process": a child process of its own (the GIL would otherwise serialise it with every session's
    # WebRTC work; a crash stays there); "thread": cheap enough to run in a thread of the server.
    worker: str = "process"
    shared: bool = False  # one instance serves every session (else one per session: per-stream state)
    # Runs on a torch.distributed process group (--gpus/--parallel): every rank builds one, and it shards
    # its work over the default group by itself (model/infinitetalk).
    shardable: bool = False
    # Build options it cannot start without, and the one-line error when one is missing.
    required_options: tuple[tuple[str, str], ...] = ()
    # Run one chunk on the session's source before the first real one: loads what is loaded lazily
    # (face analysis), and the second run measures the warm cost the scheduler starts from.
    warm_up: bool = True
    fallback: str | None = None  # a cheaper generator for the chunks this one cannot afford in time
    # At an output size other than its own (--size source, or WxH): the region around the speaker it works
    # on unless told ("face", "upper_body" or "full"), and whether it takes that region at the region's own
    # pixels (any size) rather than resampled to a bucket size (streaming/region.py).
    region: str = "upper_body"
    any_size: bool = False

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"bad device {self.device!r}: accepted are {', '.join(DEVICES)}")
        if self.worker not in WORKER_MODES:
            raise ValueError(f"bad worker mode {self.worker!r}: accepted are {', '.join(WORKER_MODES)}")

    def check_options(self, options: dict) -> None:
        """Refuse a build that lacks a required option, before any worker starts."""
        for option, message in self.required_options:
            if not options.get(option):
                raise InputError(message)
