"""``/metrics`` in the Prometheus text format, collected from the live sessions at scrape time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class SessionCollector:
    """Reads the manager's sessions on every scrape; keeps no state of its own."""

    def __init__(self, manager, mqtt_state) -> None:
        self.manager = manager
        self.mqtt_state = mqtt_state  # callable: "connected", "disconnected" or None (no MQTT)

    def collect(self):
        sessions = self.manager.sessions
        yield GaugeMetricFamily("livedub_sessions", "Live sessions", value=len(sessions))
        state = self.mqtt_state()
        if state is not None:
            yield GaugeMetricFamily("livedub_mqtt_connected", "1 while connected to the MQTT broker",
                                    value=1.0 if state == "connected" else 0.0)
        labels = ["session"]
        delay_target = GaugeMetricFamily("livedub_delay_target_seconds", "Latency budget", labels=labels)
        delay_send = GaugeMetricFamily("livedub_delay_send_seconds",
                                       "Capture-to-send delay measured at the server (p95)", labels=labels)
        fps = GaugeMetricFamily("livedub_fps_out", "Frames per second sent, mean over viewers", labels=labels)
        viewers = GaugeMetricFamily("livedub_viewers", "WHEP viewers", labels=labels)
        chunks = CounterMetricFamily("livedub_chunks", "Chunks by outcome", labels=labels + ["status"])
        tiers = CounterMetricFamily("livedub_chunk_tiers", "Chunks by tier chosen", labels=labels + ["tier"])
        cost = GaugeMetricFamily("livedub_chunk_cost_seconds", "Generator cost per chunk (mean of recent)",
                                 labels=labels)
        for sid, session in sessions.items():
            stats = session.stats()
            delay_target.add_metric([sid], stats.delay.target)
            if stats.delay.send.p95 is not None:
                delay_send.add_metric([sid], stats.delay.send.p95)
            fps.add_metric([sid], stats.fps_out)
            viewers.add_metric([sid], stats.viewers)
            for status in ("generated", "late", "skipped", "failed"):
                chunks.add_metric([sid, status], getattr(stats.chunks, status))
            for tier, count in stats.tiers.items():
                tiers.add_metric([sid, tier], count)
            if stats.cost.mean is not None:
                cost.add_metric([sid], stats.cost.mean)
        yield from (delay_target, delay_send, fps, viewers, chunks, tiers, cost)


def render(manager, mqtt_state) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SessionCollector(manager, mqtt_state))
    return generate_latest(registry)
