"""The server's sessions: creation within limits, their peers, generator pools, and event fan-out.

Generator pools are shared by every session of one generator and built on first use (the default one at
start-up): a shared generator (a GPU model, loaded once) serves every session from one instance; one with
per-session state hosts an instance per session in a few worker processes (streaming/hosts.py). Events
from sessions go to every listener (control connections, MQTT) through callbacks that must not block; a
session that ends by itself (ingest gone, idle, failure) is cleaned up here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import secrets
import time
from typing import Callable

import numpy as np

from model.base import FPS, Tier
from model.registry import serving_needs
from server.config import ServerConfig
from server.egress import Egress
from server.offers import Offer
from server.livesources import Programmes
from server.output_url import OutputUrl, expand_template, parse_output_url
from server.outputs import Output, SessionOutputs, UnknownOutput
from server.peers import Peer, open_ingest, open_viewer
from server.sources import SourceLibrary
from streaming.chunker import ChunkPlan
from streaming.errors import InputError
from streaming.events import SessionEvent, message
from streaming.heap import release_free_heap
from streaming.hosts import GeneratorHosts
from streaming.livesource import LiveVideoSource
from streaming.phases import spread_origin
from streaming.region import session_region
from streaming.session import (MAX_DELAY, SWAP_MODES, LiveSession, SessionSettings, check_delay, lowest_delay,
                               widest_margins)
from streaming.sharedsource import SourceCache
from streaming.warmup import warm_up, warm_up_request
from streaming.pool import CpuSlots, GeneratorPool, PoolStream
from streaming.workers import GeneratorFailed, GeneratorProfile, GeneratorSpec

log = logging.getLogger("livedub.manager")
# Generators that declare no tier ladder have one cost: their only cheaper rung is the fallback (or
# skipping the chunk). Those with steps to cut (infinitetalk, simulated) declare their own.
SINGLE_TIER = (Tier("full"),)
ORIGIN_MARGIN = 1.0  # seconds a session's first frames stay ahead of their due time when its origin moves back


class UnknownSession(InputError):
    pass


class LimitReached(InputError):
    pass


class GeneratorUnavailable(InputError):
    """The generator cannot be built on this server (missing weights, or it failed before)."""


@dataclasses.dataclass
class _Entry:
    session: LiveSession
    ingest: Peer | None = None
    second_ingest: Peer | None = None  # speaker 2's speech (POST /whip/ID?speaker=2)
    viewers: dict[str, Peer] = dataclasses.field(default_factory=dict)
    watcher: asyncio.Task | None = None
    streams: list[PoolStream] = dataclasses.field(default_factory=list)  # its generator streams, closed with it
    egress: Egress | None = None  # the session's encoders, shared by its viewers (made for the first)
    unsubscribe: Callable[[], None] | None = None  # from its live programme source, if it plays one
    outputs: SessionOutputs | None = None  # its RTMP/SRT outputs (made for the first)


class SessionManager:
    def __init__(self, config: ServerConfig, library: SourceLibrary, plan: ChunkPlan = ChunkPlan(),
                 settings: SessionSettings | None = None) -> None:
        self.config = config
        self.library = library
        self.plan = plan
        self.settings = settings or SessionSettings(delay=config.delay, lead=config.lead,
                                                    idle_timeout=config.idle_timeout)
        self._entries: dict[str, _Entry] = {}
        self._pools: dict[str, GeneratorPool | GeneratorHosts] = {}
        self._pool_lock = asyncio.Lock()
        self._listeners: list[Callable[[dict], None]] = []
        self._creating = 0
        self.started = time.time()
        # CPU generators of all sessions share the cores left after the WebRTC work (one core's worth),
        # and as many host workers hold their sessions' instances.
        self.cpu_slots = CpuSlots(max(1, (os.cpu_count() or 2) - 1))
        # What the generators turned out to be once started: lets a request be checked (its delay, a
        # generator that failed to build) before it takes a worker.
        self._profiles: dict[str, GeneratorProfile] = {}
        self._unbuildable: dict[str, str] = {}
        self._warm_costs: dict[str, float] = {}  # generator -> warm chunk seconds measured at start-up
        # (generator, source) -> the same, for the source it was measured on (whole frames only)
        self._source_warm_costs: dict[tuple[str, str], float] = {}
        self._origins: dict[str, float] = {}  # session -> its clock origin, from its creation on
        self.sources = SourceCache()  # sessions on one library source share its decoded frames
        # The operator's live programme sources: read while sessions use them, shared by those sessions.
        self.programmes = Programmes(config.live_sources, lambda state: self.emit(state.message()),
                                     config.live_source_idle)

    # ---- events -----------------------------------------------------------------------------------------
    def listen(self, listener: Callable[[dict], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _emit_event(self, session_id: str, event: SessionEvent) -> None:
        self.emit(message(event, session_id))

    def emit(self, event: dict) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - one broken listener must not silence the others
                log.exception("event listener failed")

    # ---- generators ---------------------------------------------------------------------------------------
    def _spec(self, name: str | None) -> tuple[GeneratorSpec, str]:
        """Generator ``name``'s spec and worker mode. The configured options (--weights, -o) are the
        configured generator's: another one (a session's choice, a declared fallback) is built without."""
        name = name or self.config.generator
        options = dict(self.config.generator_options) if name == self.config.generator else {}
        spec = GeneratorSpec.from_registry(name, options)
        if self._group(spec) is not None:
            return spec, "process"
        mode = self.config.worker if self.config.worker != "auto" else serving_needs(spec.name).worker
        return spec, mode

    def _group(self, spec: GeneratorSpec):
        """The process group (--gpus/--parallel) that generator ``spec`` runs on, if any."""
        return self.config.group if serving_needs(spec.name).shardable else None

    def _shared(self, spec: GeneratorSpec) -> bool:
        """One pool for every session: generators declared shared (a GPU model is loaded once) and
        process groups."""
        return serving_needs(spec.name).shared or self._group(spec) is not None

    async def pool(self, name: str | None = None) -> GeneratorPool | GeneratorHosts:
        """The pool of generator ``name``, started on first use: one instance for every session (a shared
        model: one load), or host workers with an instance per session."""
        spec, mode = self._spec(name)
        async with self._pool_lock:
            if spec.name not in self._pools:
                self._check_buildable(spec)
                queue_limit = 2 * self.config.max_sessions
                if self._shared(spec):
                    workers = self.config.workers or 1
                    group = self._group(spec)
                    pool = GeneratorPool(spec, workers=workers, mode=mode, queue_limit=queue_limit, group=group)
                    where = group.describe() if group is not None else f"{workers} {mode} worker(s)"
                else:
                    pool = GeneratorHosts(spec, mode, self.config.workers or self.cpu_slots.count,
                                          self.cpu_slots, queue_limit)
                    where = f"{len(pool.pools)} {mode} host(s), an instance per session"
                try:
                    await pool.start()
                except GeneratorFailed as exc:  # a generator that failed to load fails the same next time
                    self._unbuildable[spec.name] = str(exc)
                    await pool.close()
                    raise
                log.info("generator %s ready on %s", spec.name, where)
                self._pools[spec.name] = pool
                self._profiles.setdefault(pool.profile.name, pool.profile)
            return self._pools[spec.name]

    def _check_buildable(self, spec: GeneratorSpec) -> None:
        try:
            serving_needs(spec.name).check_options(dict(spec.options))
        except InputError as exc:
            raise GeneratorUnavailable(str(exc)) from None
        if spec.name in self._unbuildable:
            raise GeneratorUnavailable(f"generator {spec.name} failed to start on this server: "
                                       f"{self._unbuildable[spec.name][:200]}")

    def _known_profiles(self, spec: GeneratorSpec) -> list[GeneratorProfile | None]:
        """The profiles of the generator (and fallback) a session of ``spec`` would run; None if unknown."""
        fallback = serving_needs(spec.name).fallback
        names = [spec.name] + ([fallback] if fallback else [])
        return [self._profiles.get(name) for name in names]

    def _check_delay_early(self, spec: GeneratorSpec, delay: float | None) -> None:
        """A delay refused before any worker is taken: exactly when the generator's margins are known,
        else against the widest range any generator could accept."""
        if delay is None:
            return
        profiles = self._known_profiles(spec)
        right = widest_margins(*profiles).right if all(profiles) else 0.0
        check_delay(delay, self.plan, right, self.settings, self.warm_cost(spec.name))

    def warm_cost(self, name: str) -> float | None:
        """The lowest warm chunk cost measured for generator ``name`` (at start-up or a session's warm-up)."""
        return self._lowest_warm_cost(lambda s: s.profile.name == name, self._warm_costs.get(name))

    def source_warm_cost(self, name: str, source: str, region: str | None) -> float | None:
        """The warm chunk cost of generator ``name`` measured on ``source`` (at start-up, or by a session on
        it), as a session with ``region`` would have it; None when not measured so."""
        return self._lowest_warm_cost(
            lambda s: (s.profile.name, s.source_name, s.settings.region) == (name, source, region),
            self._source_warm_costs.get((name, source)) if region is None else None)

    def _lowest_warm_cost(self, matches: Callable[[LiveSession], bool], known: float | None) -> float | None:
        """The lowest of ``known`` and the warm-ups of the sessions that ``matches``; None if neither."""
        costs = [s.warm_up.warm for s in self.sessions.values() if s.warm_up is not None and matches(s)]
        return min(costs + ([known] if known is not None else []), default=None)

    async def delay_limits(self, generator: str | None = None) -> dict:
        """The delays a session of ``generator`` accepts: ``exact`` once the generator's audio lookahead is
        known (it has started), else the lowest any generator could accept."""
        spec, _ = self._spec(generator)
        profiles = self._known_profiles(spec)
        exact = all(profiles)
        right = widest_margins(*profiles).right if exact else 0.0
        low = lowest_delay(self.plan, right, self.settings, self.warm_cost(spec.name))
        return {"min": low, "max": MAX_DELAY, "default": self.config.delay, "exact": exact}

    async def prepare(self) -> str:
        """Load the default generator at start-up (a shared GPU model, or the hosts of the sessions'
        instances), warm it on a library source to measure its chunk cost, and refuse a --delay below what
        it needs. The live programme listeners start listening now (a listener must be up before its sender
        connects); pulled programmes are read from their first session on."""
        self.programmes.start()
        spec, _ = self._spec(None)
        pool = await self.pool()
        if serving_needs(spec.name).warm_up:
            reference = await self._any_reference()
            if reference is not None:
                request = warm_up_request(reference[0], self.plan, pool.profile.audio_margins,
                                          (pool.profile.tiers or SINGLE_TIER)[0], reference[1])
                # Every host pays what a process loads once now (its instance for no stream runs it).
                for target in pool.pools if isinstance(pool, GeneratorHosts) else [pool]:
                    measured = await warm_up(target, request, time.monotonic)
                self._warm_costs[spec.name] = measured.warm
                if session_region(self.config.size, None, spec.name) is None:  # measured on whole frames
                    self._source_warm_costs[(spec.name, reference[2])] = measured.warm
                log.info("generator %s warm: first chunk %.3f s cold, %.3f s warm", spec.name, measured.cold,
                         measured.warm)
                del reference, request
                # The clip decoded for the warm-up is freed (once the pool's loop has let go of the request):
                # its pages go back to the OS (about 550 MiB at 512x512).
                await asyncio.sleep(0)
                await asyncio.get_running_loop().run_in_executor(None, release_free_heap)
        right = widest_margins(*(p for p in self._known_profiles(spec) if p is not None)).right
        try:
            check_delay(self.config.delay, self.plan, right, self.settings, self.warm_cost(spec.name))
        except InputError as exc:
            raise InputError(f"--delay: {exc} for generator {spec.name}") from None
        return spec.name

    async def _any_reference(self):
        """The first frame of the library's first source at the output size, its first window's frames
        when it moves, and its name (None: an empty library)."""
        names = sorted(self.library.names())
        if not names:
            return None
        source = await self.load_source(names[0])
        run = asyncio.get_running_loop().run_in_executor
        frames = None if source.is_still else await run(None, source.frames, 0, self.plan.chunk(0).num_frames)
        reference = await run(None, source.frame, 0)
        if session_region(self.config.size, None, "") is not None:  # the generator sees a region at its size
            from streaming.composite import crop
            from streaming.region import whole_frame

            framing = whole_frame(reference.shape[:2])
            reference = crop(reference, framing)
            frames = None if frames is None else np.stack([crop(image, framing) for image in frames])
        return reference, frames, names[0]

    async def _session_streams(self, name: str | None, session_id: str) -> tuple[PoolStream, PoolStream | None]:
        """The session's stream on its generator's pool, and on its declared fallback's (a cheaper
        generator for the chunks the first cannot afford): the instance of a shared generator, or one of
        the session's own on a host worker."""
        spec, _ = self._spec(name)
        pool = (await self.pool(name)).stream(session_id)
        fallback = serving_needs(spec.name).fallback
        if not fallback:
            return pool, None
        try:
            return pool, (await self.pool(fallback)).stream(session_id)
        except BaseException:
            await pool.close()
            raise

    # ---- sessions -----------------------------------------------------------------------------------------
    @property
    def sessions(self) -> dict[str, LiveSession]:
        return {sid: entry.session for sid, entry in self._entries.items()}

    def get(self, session_id) -> LiveSession:
        return self._entry(session_id).session

    def _entry(self, session_id) -> _Entry:
        entry = self._entries.get(session_id) if isinstance(session_id, str) else None
        if entry is None:
            raise UnknownSession(f"unknown session {str(session_id)[:40]!r}")
        return entry

    async def create(self, source: str | None, generator: str | None = None, delay: float | None = None,
                     live_video: bool = False, outputs: list[str] = ()) -> LiveSession:
        """A new session on library source ``source`` (or on live video from its WHIP ingest), pushed to
        ``outputs`` (RTMP/SRT URLs) and to ``--output-url``'s."""
        # Everything that can be refused is refused first, before a worker is taken or started.
        urls = self.check_outputs(outputs)
        programme = None if live_video else self.programmes.get(source)
        path = None if (live_video and source is None) or programme is not None else self.library.path(source)
        spec, _ = self._spec(generator)
        self._check_buildable(spec)
        self._check_delay_early(spec, delay)
        if len(self._entries) + self._creating >= self.config.max_sessions:
            raise LimitReached(f"session limit reached ({self.config.max_sessions}); stop one first")
        self._creating += 1
        streams: list[PoolStream] = []
        session_id = secrets.token_hex(8)
        try:
            pool, fallback = await self._session_streams(generator, session_id)
            streams = [stream for stream in (pool, fallback) if stream is not None]
            margins = widest_margins(*(p.profile for p in (pool, fallback) if p is not None))
            delay = check_delay(self.config.delay if delay is None else delay, self.plan, margins.right,
                                self.settings, self.warm_cost(pool.profile.name))
            tiers = pool.profile.tiers or SINGLE_TIER
            settings = dataclasses.replace(self.settings, delay=delay, tiers=tiers,
                                           region=session_region(self.config.size, self.config.region, spec.name))
            if programme is not None:
                media, name = programme.live_source(self.config.size), source
            elif path is None or live_video:
                media, name = LiveVideoSource(self.config.size), "live"
            else:
                media = await asyncio.get_running_loop().run_in_executor(
                    None, self.sources.open, path, self.config.size, settings.keyframe_interval)
                name = source
            needs = serving_needs(spec.name)
            # Events are typed up to here; listeners (control, MQTT) get them as JSON-ready dicts.
            emit = functools.partial(self._emit_event, session_id)
            # A session's own instance is warmed on its source (a shared one was warmed at start-up and
            # serves other sessions' chunks meanwhile), unless its cost there is known already: the host is
            # warm from start-up, and the warm-up would only take the host from other sessions' chunks (six
            # sessions started together queue twelve warm-up runs).
            known = self.source_warm_cost(pool.profile.name, name, settings.region)
            session = LiveSession(session_id, media, name, pool, settings, emit, plan=self.plan,
                                  fallback_pool=fallback, warm=needs.warm_up and not needs.shared and known is None,
                                  warm_cost=known if known is not None else self.warm_cost(pool.profile.name),
                                  origin=self._spread_origin(session_id, settings))
            await session.start()
        except BaseException:
            self._origins.pop(session_id, None)
            await asyncio.gather(*(p.close() for p in streams), return_exceptions=True)
            raise
        finally:
            self._creating -= 1
        entry = _Entry(session, streams=streams)
        if programme is not None:
            entry.unsubscribe = programme.subscribe(functools.partial(_push_programme_frame, session))
        self._entries[session_id] = entry
        entry.watcher = asyncio.create_task(self._reap(entry), name=f"reap-{session_id}")
        if self.config.output_url:
            urls.append(expand_template(self.config.output_url, session_id, self.config.allow_output_hosts))
        for url in urls:
            self._outputs(entry).add(url)
        log.info("session %s created (source %s, generator %s, delay %.2f s)", session_id, name,
                 pool.profile.name, delay)
        self.emit({"type": "event", "event": "created", "session": session_id, "source": name,
                   "generator": pool.profile.name, "delay": delay})
        return session

    def _spread_origin(self, session_id: str, settings: SessionSettings) -> float:
        """A new session's clock origin: its chunks fall due between those of the sessions running or
        being created (kept until the session is forgotten)."""
        origin = spread_origin(time.monotonic(), list(self._origins.values()), self.plan.stride / FPS,
                               settings.delay - settings.lead - ORIGIN_MARGIN)
        self._origins[session_id] = origin
        return origin

    async def load_source(self, name: str):
        path = self.library.path(name)
        return await asyncio.get_running_loop().run_in_executor(
            None, self.sources.open, path, self.config.size, self.settings.keyframe_interval)

    async def attach_ingest(self, session_id: str, offer: Offer, speaker: int = 1) -> str:
        """Answer a WHIP offer for an existing session (one ingest per speaker: speaker 1's, which the
        session lives by, and optionally speaker 2's)."""
        entry = self._entry(session_id)
        if speaker == 2:
            return await self._attach_second_speaker(entry, offer)
        if entry.ingest is not None:
            raise LimitReached(f"session {session_id} already has its ingest")
        session = entry.session
        peer, answer = await open_ingest(session, offer, self.config.ice_servers, session.end_ingest,
                                         self.config.connect_timeout)
        if entry.ingest is not None or session.state == "ended":
            await peer.close()
            raise LimitReached(f"session {session_id} already has its ingest")
        entry.ingest = peer
        return answer

    async def _attach_second_speaker(self, entry: _Entry, offer: Offer) -> str:
        session = entry.session
        taken = f"session {session.id} already has speaker 2's ingest"
        if entry.second_ingest is not None:
            raise LimitReached(taken)
        ingest = session.speakers.ingest(2)
        try:
            # Speaker 2 leaving is silence from then on; the session lives by speaker 1's ingest.
            peer, answer = await open_ingest(session, offer, self.config.ice_servers, ingest.end,
                                             self.config.connect_timeout, speaker=2)
        except BaseException:
            session.speakers.forget_unused_second()  # a failed offer leaves the session with one speaker
            raise
        if entry.second_ingest is not None or session.state == "ended":
            await peer.close()
            raise LimitReached(taken)
        entry.second_ingest = peer
        return answer

    async def detach_second_speaker(self, session_id: str) -> None:
        entry = self._entry(session_id)
        peer, entry.second_ingest = entry.second_ingest, None
        if peer is None:
            raise UnknownSession(f"session {session_id} has no speaker 2 ingest")
        entry.session.speakers.ingest(2).end()
        await peer.close()

    # ---- broadcast outputs (RTMP/SRT) -----------------------------------------------------------------
    def check_outputs(self, urls) -> list[OutputUrl]:
        """Output URLs checked (scheme, host against --allow-output-host, port, ...) before any is used."""
        if not isinstance(urls, (list, tuple)):
            raise InputError("outputs must be a list of rtmp://, rtmps:// or srt:// URLs")
        return [parse_output_url(url, self.config.allow_output_hosts) for url in urls]

    def _egress(self, entry: _Entry) -> Egress:
        if entry.egress is None:
            entry.egress = Egress(entry.session.playout, entry.session.output_size)
        return entry.egress

    def _outputs(self, entry: _Entry) -> SessionOutputs:
        if entry.outputs is None:
            emit = functools.partial(self._emit_event, entry.session.id)
            entry.outputs = SessionOutputs(self._egress(entry), entry.session.playout.clock, emit)
            entry.session.reporters["outputs"] = entry.outputs.stats
        return entry.outputs

    def add_output(self, session_id: str, url: str) -> Output:
        entry = self._entry(session_id)
        checked = self.check_outputs([url])[0]
        if entry.session.state == "ended":
            raise UnknownSession(f"session {session_id} has ended")
        return self._outputs(entry).add(checked)

    async def remove_output(self, session_id: str, output_id) -> None:
        entry = self._entry(session_id)
        if entry.outputs is None:
            raise UnknownOutput(f"unknown output {str(output_id)[:40]!r}: session {session_id} has none")
        await entry.outputs.remove(output_id)

    async def add_viewer(self, session_id: str, offer: Offer) -> tuple[str, str]:
        entry = self._entry(session_id)
        if len(entry.viewers) >= self.config.max_viewers:
            raise LimitReached(f"viewer limit reached for session {session_id} ({self.config.max_viewers})")
        viewer_id = secrets.token_hex(6)
        peer, answer = await open_viewer(entry.session, self._egress(entry), viewer_id, offer, self.config.ice_servers,
                                         lambda: asyncio.ensure_future(self._viewer_gone(session_id, viewer_id)),
                                         self.config.connect_timeout)
        if session_id not in self._entries:
            await peer.close()
            raise UnknownSession(f"session {session_id} has ended")
        entry.viewers[viewer_id] = peer
        return viewer_id, answer

    async def remove_viewer(self, session_id: str, viewer_id: str) -> None:
        entry = self._entry(session_id)
        peer = entry.viewers.pop(viewer_id, None)
        if peer is None:
            raise UnknownSession(f"unknown viewer {str(viewer_id)[:40]!r} of session {session_id}")
        entry.session.playout.forget_viewer(viewer_id)
        await peer.close()

    async def _viewer_gone(self, session_id: str, viewer_id: str) -> None:
        if viewer_id in getattr(self._entries.get(session_id), "viewers", {}):
            await self.remove_viewer(session_id, viewer_id)

    def end_ingest(self, session_id: str) -> dict:
        """End a session's speech input: what was captured plays out, then the session ends."""
        session = self.get(session_id)
        session.end_ingest()
        return {"ends_at": round(session.end_frame / 25, 3)}

    async def stop(self, session_id: str, reason: str = "stopped") -> None:
        entry = self._entry(session_id)
        await entry.session.stop(reason)
        if entry.watcher is not None:
            await asyncio.gather(entry.watcher, return_exceptions=True)

    async def _reap(self, entry: _Entry) -> None:
        """When the session ends (for whatever reason), close its peers and forget it."""
        await entry.session.finished.wait()
        if entry.unsubscribe is not None:
            entry.unsubscribe()
        peers = [p for p in (entry.ingest, entry.second_ingest) if p] + list(entry.viewers.values())
        await asyncio.gather(*(p.close() for p in peers), *(p.close() for p in entry.streams),
                             *([entry.outputs.close()] if entry.outputs is not None else []), return_exceptions=True)
        if entry.egress is not None:
            entry.egress.close()
        self._entries.pop(entry.session.id, None)
        self._origins.pop(entry.session.id, None)
        log.info("session %s ended (%s)", entry.session.id, entry.session.end_reason)
        del peers, entry  # this frame's references go first: with no cycle left, the session is freed by now
        await asyncio.get_running_loop().run_in_executor(None, release_free_heap)

    async def swap(self, session_id: str, source: str, mode: str = "cut") -> dict:
        session = self.get(session_id)
        if mode not in SWAP_MODES:
            raise InputError(f"bad swap mode {str(mode)[:20]!r}: accepted are {', '.join(SWAP_MODES)}")
        if self.programmes.get(source) is not None:
            raise InputError(f"{source} is a live programme source: a session starts on it (create); a reference "
                             "swapped in must be a file of the sources folder")
        media = await self.load_source(source)
        previous = session.source_name
        where = session.swap_reference(source, media, mode)
        # Every client of the session sees the swap (the page's reference picker follows it).
        self.emit({"type": "event", "event": "swap", "session": session_id, "source": source,
                   "previous": previous, "mode": mode, **where})
        return where

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(sid, "server_stopped") for sid in list(self._entries)),
                             return_exceptions=True)
        await self.programmes.close()
        await asyncio.gather(*(p.close() for p in self._pools.values()), return_exceptions=True)
        self._pools.clear()


def _push_programme_frame(session: LiveSession, frame, due: float) -> None:
    """A programme frame due at ``due`` (server clock) onto the session's capture timeline (until a
    library reference swapped in replaces the live video)."""
    if session.live is not None:
        session.live.push(frame, session.clock.session_time(due))
