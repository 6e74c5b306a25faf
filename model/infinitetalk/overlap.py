"""Work beside the chunk's critical path: a side worker (one thread; on CUDA its own stream) and the key
that says a prefetched request is the one that came.

The critical path of chunk k is what needs chunk k-1's output: the motion latents from its last frames,
the DiT steps, the decode (whose last frames are chunk k+1's context). Everything else (wav2vec2, CLIP
and the VAE encoding of the reference, the SDEdit source latents, the noise) is prepared for chunk k+1
on a side worker while chunk k's DiT runs.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
from collections.abc import Callable, Iterable
from typing import TypeVar

import numpy as np
import torch

from model.base import ChunkRequest

T = TypeVar("T")
Events = Callable[[str, int], None]


class SideWorker:
    """Runs jobs one at a time on its own thread. On CUDA each job runs on the worker's own stream of each
    device it uses, after the work the submitting thread had queued there, and is finished (synchronised)
    before its result is handed back, so the result can be read on any stream."""

    def __init__(self, name: str, *devices: torch.device) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)
        cuda = {torch.device(d).index or 0 for d in devices if torch.device(d).type == "cuda"}
        self._streams = [torch.cuda.Stream(torch.device("cuda", i)) for i in sorted(cuda)]

    def submit(self, job: Callable[..., T], *args) -> concurrent.futures.Future:
        producers = [torch.cuda.current_stream(stream.device) for stream in self._streams]

        def run() -> T:
            with contextlib.ExitStack() as streams:
                for stream, producer in zip(self._streams, producers):
                    stream.wait_stream(producer)
                    streams.enter_context(torch.cuda.stream(stream))
                result = job(*args)
            for stream in self._streams:
                stream.synchronize()
            return result

        return self._pool.submit(run)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def hand_over(tensors: Iterable[torch.Tensor]) -> None:
    """Tensors made on a side stream, now read on the current one: tell the caching allocator, so their
    memory is not reused by the side stream while this stream's queued kernels still read it."""
    for tensor in tensors:
        if tensor.is_cuda:
            tensor.record_stream(torch.cuda.current_stream(tensor.device))


def request_key(request: ChunkRequest, with_source: bool = False) -> tuple:
    """Everything of a request a chunk's preparation reads (not its context frames): a prefetched
    preparation is used only for a request with the same key."""
    digest = hashlib.sha1()
    for array in (request.audio, request.second_audio, request.reference_frame,
                  request.source_frames if with_source else None):
        if array is not None:
            digest.update(np.ascontiguousarray(array).tobytes())
    return (request.index, request.start_frame, request.num_frames, request.audio_offset, request.reference_index,
            request.audio_end_frame, request.tier, request.seed, request.color_strength, request.size,
            request.speaker_faces, digest.hexdigest())


def emit(events: Events | None, name: str, index: int):
    """``name_start`` / ``name_end`` around a stage, for an observer (tests, traces)."""
    if events is None:
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def stage():
        events(f"{name}_start", index)
        yield
        events(f"{name}_end", index)

    return stage()
