"""Output URLs checked at the edge (scheme, host, port, length, characters, allowed hosts), the
``--output-url``/``--allow-output-host`` settings, and the retry backoff on an injected clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from streaming.backoff import Backoff
from server.config import build_config
from server.output_url import MAX_URL_CHARS, expand_template, parse_output_url
from streaming.clock import VirtualClock
from streaming.errors import InputError


@pytest.mark.parametrize("url, scheme, host, port, shown", [
    ("rtmp://cdn.example.com/live/SECRETKEY", "rtmp", "cdn.example.com", 1935, "rtmp://cdn.example.com:1935/live/***"),
    ("rtmps://live.example.com:443/app/sub/KEY", "rtmps", "live.example.com", 443,
     "rtmps://live.example.com:443/app/sub/***"),
    ("RTMP://127.0.0.1:19350/live/x", "rtmp", "127.0.0.1", 19350, "rtmp://127.0.0.1:19350/live/***"),
    ("srt://[::1]:9000?streamid=KEY&latency=200", "srt", "::1", 9000, "srt://[::1]:9000?streamid=***&latency=200"),
    ("srt://gw.example.com:9000?passphrase=0123456789", "srt", "gw.example.com", 9000,
     "srt://gw.example.com:9000?passphrase=***"),
])
def test_accepted_urls_are_shown_without_their_secrets(url, scheme, host, port, shown):
    checked = parse_output_url(url)
    assert (checked.scheme, checked.host, checked.port, checked.shown, checked.url) == (scheme, host, port, shown, url)
    assert "SECRET" not in repr(checked) and "KEY" not in checked.shown


@pytest.mark.parametrize("url, words", [
    ("http://host/live/key", "bad output URL scheme 'http': accepted are rtmp://"),
    ("file:///etc/passwd", "bad output URL scheme 'file'"),
    ("rtmp://host/live", "accepted is rtmp://HOST[:PORT]/APP/STREAM"),
    ("rtmp://host:99999/live/key", "bad output URL port"),
    ("rtmp://host:0/live/key", "a port from 1 to 65535 is needed"),
    ("srt://host", "a port from 1 to 65535 is needed"),
    ("srt://host:9000?mode=listener", "bad SRT URL option 'mode'"),
    ("srt://host:9000?latency=1&latency=2", "each once"),
    ("srt://host:9000/path", "no path"),
    ("rtmp://user:pw@host/live/key", "user:password@ is not accepted"),
    ("rtmp://ho st/live/key", "spaces and control characters are not accepted"),
    ("rtmp://host/live/key\r\nX: y", "spaces and control characters are not accepted"),
    ("rtmp://-bad-/live/key", "bad output URL host"),
    ("rtmp://host/live/" + "k" * MAX_URL_CHARS, f"accepted are at most {MAX_URL_CHARS}"),
    (42, "a string is needed"),
])
def test_bad_urls_are_refused_in_one_line(url, words):
    with pytest.raises(InputError) as caught:
        parse_output_url(url)
    message = str(caught.value)
    assert words in message and "\n" not in message and len(message) < 300


def test_allowed_hosts_refuse_others():
    allowed = ("cdn.example.com", "10.0.0.5")
    assert parse_output_url("rtmp://CDN.example.com/live/k", allowed).host == "cdn.example.com"
    assert parse_output_url("srt://10.0.0.5:9000", allowed).port == 9000
    with pytest.raises(InputError, match=r"^output host 'evil.example.com' is not allowed: accepted are "
                                         r"cdn.example.com, 10.0.0.5$"):
        parse_output_url("rtmp://evil.example.com/live/k", allowed)


def test_template_and_server_settings():
    assert expand_template("rtmp://h/live/{session}", "abc").url == "rtmp://h/live/abc"
    with pytest.raises(InputError, match="the only placeholder accepted is {session}"):
        expand_template("rtmp://h/live/{id}", "abc")
    config = build_config({"output_url": "rtmp://Cdn.Example.com/live/{session}",
                           "allow_output_host": ["cdn.example.com", "[::1]"]})
    assert config.allow_output_hosts == ("cdn.example.com", "::1")
    assert "live/{session}" not in repr(config)  # a template may hold a stream key: not in logs
    with pytest.raises(InputError, match=r"^--output-url: output host 'other.example.com' is not allowed"):
        build_config({"output_url": "rtmp://other.example.com/live/{session}", "allow_output_host": "cdn.example.com"})
    with pytest.raises(InputError, match=r"^bad output host 'no host!'"):
        build_config({"allow_output_host": ["no host!"]})


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=80), st.builds(lambda s, rest: s + rest,
                                                  st.sampled_from(["rtmp://", "rtmps://", "srt://", "srt://h:1?"]),
                                                  st.text(max_size=60))))
def test_any_text_is_a_checked_url_or_one_line_error(text):
    try:
        checked = parse_output_url(text)
    except InputError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 400
        return
    assert checked.scheme in ("rtmp", "rtmps", "srt") and 1 <= checked.port <= 65535
    assert not any(ord(c) < 33 for c in checked.url)
    assert "@" not in checked.shown.partition("?")[0]


def test_backoff_doubles_to_its_cap_and_resets_after_a_connection_that_held():
    clock = VirtualClock()
    backoff = Backoff(first=0.5, cap=4.0, stable=10.0)
    assert [backoff.failed(clock.now()) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.connected(clock.now())
    clock.jump(3.0)  # dropped after 3 s: not a connection that held, the count goes on
    assert backoff.failed(clock.now()) == 4.0
    backoff.connected(clock.now())
    clock.jump(10.0)  # up 10 s: the next failure is tried again soon
    assert backoff.failed(clock.now()) == 0.5
    assert Backoff(give_up_after=3).failed(0.0) == 0.5
    limited = Backoff(give_up_after=2)
    assert [limited.failed(0.0), limited.failed(0.0)] == [0.5, None]
