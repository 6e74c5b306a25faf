"""A control-websocket client (the ``websockets`` library): requests matched to replies by id, pushed
events collected in a bounded queue."""

from __future__ import annotations

import asyncio
import itertools
import json

import websockets


class ControlError(RuntimeError):
    def __init__(self, reply: dict) -> None:
        super().__init__(f"{reply.get('code')}: {reply.get('message')}")
        self.code = reply.get("code")
        self.reply = reply


class ControlClient:
    def __init__(self, url: str, token: str | None = None, max_events: int = 1000) -> None:
        self.url = url
        self.token = token
        self.events: asyncio.Queue = asyncio.Queue(maxsize=max_events)
        self.unmatched: asyncio.Queue = asyncio.Queue(maxsize=max_events)  # replies to ``send_raw``
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._socket = None
        self._reader: asyncio.Task | None = None

    async def __aenter__(self) -> "ControlClient":
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        self._socket = await websockets.connect(self.url, additional_headers=headers, max_size=4 << 20)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc) -> None:
        await self._socket.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self) -> None:
        try:
            async for raw in self._socket:
                message = json.loads(raw)
                future = self._waiting.pop(message.get("id"), None) if message.get("type") != "event" else None
                if future is not None and not future.done():
                    future.set_result(message)
                elif message.get("type") == "event" and not self.events.full():
                    self.events.put_nowait(message)
                elif message.get("type") != "event" and not self.unmatched.full():
                    self.unmatched.put_nowait(message)
        except websockets.ConnectionClosed:
            pass
        finally:
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(ConnectionError("control connection closed"))

    async def send_raw(self, text: str | bytes) -> None:
        await self._socket.send(text)

    async def request(self, op: str, timeout: float = 30.0, **fields) -> dict:
        """Send one op; its reply (raises ControlError on an error reply)."""
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        await self._socket.send(json.dumps({"id": request_id, "op": op, **fields}))
        reply = await asyncio.wait_for(future, timeout)
        if reply.get("type") == "error":
            raise ControlError(reply)
        return reply

    async def next_event(self, name: str | None = None, timeout: float = 10.0) -> dict:
        """The next pushed event (of kind ``name`` when given)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = await asyncio.wait_for(self.events.get(), max(0.0, deadline - loop.time()))
            if name is None or event.get("event") == name:
                return event
