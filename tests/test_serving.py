"""A generator's serving record (model/serving.py) decides how the server runs it: shared or per session,
thread or process, its fallback, the options it needs. The server reads only the record: a generator the
server has never heard of gets exactly what its record asks for."""

from __future__ import annotations

import pytest

from _server_support import write_still
from model.errors import InputError
from model.registry import GENERATORS, SERVING, serving_needs
from model.serving import ServingNeeds
from server.config import ServerConfig
from server.manager import GeneratorUnavailable, SessionManager
from server.sources import SourceLibrary
from streaming.chunker import ChunkPlan

PASSTHROUGH = GENERATORS["passthrough"]


@pytest.fixture
def manager_of(tmp_path, monkeypatch):
    """A session manager whose registry holds generators declared by the test."""
    folder = tmp_path / "sources"
    folder.mkdir()
    write_still(str(folder / "red.png"), (200, 30, 30))
    made = []

    def make(default: str, **declared: ServingNeeds) -> SessionManager:
        for name, needs in declared.items():
            monkeypatch.setitem(GENERATORS, name, PASSTHROUGH)
            monkeypatch.setitem(SERVING, name, needs)
        config = ServerConfig(sources=str(folder), generator=default, delay=1.0, size=(64, 64))
        manager = SessionManager(config, SourceLibrary(str(folder)), plan=ChunkPlan(window=9, context=3))
        made.append(manager)
        return manager

    yield make


def test_the_record_checks_itself_and_names_what_is_missing():
    with pytest.raises(ValueError, match="bad device 'tpu'"):
        ServingNeeds(device="tpu")
    with pytest.raises(ValueError, match="bad worker mode 'fiber'"):
        ServingNeeds(worker="fiber")
    needs = ServingNeeds(required_options=(("weights", "needs --weights DIR"),))
    with pytest.raises(InputError, match="needs --weights DIR"):
        needs.check_options({})
    needs.check_options({"weights": "/w"})
    assert serving_needs("never-declared") == ServingNeeds()  # a CPU process per session, warmed up
    assert serving_needs("infinitetalk").shared and serving_needs("infinitetalk").fallback == "lite"


async def test_a_shared_generator_serves_every_session_from_one_pool(manager_of):
    manager = manager_of("one", one=ServingNeeds(worker="thread", shared=True, warm_up=False))
    try:
        first = await manager.create("red")
        second = await manager.create("red")
        assert first.pool is second.pool and first.pool.mode == "thread"
        assert first.fallback_pool is None
    finally:
        await manager.close()


async def test_a_per_session_generator_gets_its_own_pool_and_its_declared_fallback(manager_of):
    manager = manager_of("own", own=ServingNeeds(worker="thread", fallback="cheap", warm_up=False),
                         cheap=ServingNeeds(worker="thread", warm_up=False))
    try:
        first = await manager.create("red")
        second = await manager.create("red")
        assert first.pool is not second.pool
        assert first.fallback_pool is not None and first.fallback_pool.mode == "thread"
        assert [t.name for t in first.scheduler.tiers][-1] == "fallback"
    finally:
        await manager.close()


async def test_a_missing_required_option_is_refused_before_any_worker(manager_of):
    manager = manager_of("lite", heavy=ServingNeeds(required_options=(("weights", "heavy needs --weights DIR"),)))
    try:
        with pytest.raises(GeneratorUnavailable, match="heavy needs --weights DIR"):
            await manager.create("red", generator="heavy")
        assert not manager.sessions
    finally:
        await manager.close()
