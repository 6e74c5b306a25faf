"""SDP offers checked at the edge: everything aiortc would trip over, refused with a 400 before a session
is created or a worker taken.

aiortc's own parser reads the offer; the checks then cover what aiortc assumes without checking (an
``a=setup`` per section, unique mids, fingerprints it can verify, candidate ports that fit a socket
address) and what it checks too late (ICE credentials, ``a=rtcp-mux``, a common codec: after a session
exists). This server takes no trickled candidates (PATCH is refused), so an offer without a candidate
cannot connect and is refused too: it would otherwise hold a session, and its worker, until the idle
timeout.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re

from aiortc.codecs import CODECS
from aiortc.rtcdtlstransport import X509_DIGEST_ALGORITHMS
from aiortc.rtcpeerconnection import find_common_codecs
from aiortc.sdp import SessionDescription

from streaming.errors import InputError, quoted

SENDING = ("sendonly", "sendrecv")
RECEIVING = ("recvonly", "sendrecv")
ICE_CHARS = re.compile(r"[A-Za-z0-9+/]+")  # RFC 8839 ice-char
DIGEST_BYTES = {"sha-256": 32, "sha-384": 48, "sha-512": 64}
FINGERPRINT = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})*")
CANDIDATE_TYPES = ("host", "srflx", "prflx", "relay")


class OfferError(InputError):
    """An SDP offer this server cannot answer (or could answer but never connect)."""


@dataclasses.dataclass(frozen=True)
class Offer:
    """A checked offer: its SDP and the direction of its audio and video sections."""

    sdp: str
    media: dict[str, str]  # "audio"/"video" -> direction from the offerer's side


def _refuse(problem: str) -> OfferError:
    return OfferError(f"bad SDP offer: {problem}")


def _check_section(index: int, section, mids: set[str]) -> None:
    where = f"m-section {index} ({section.kind})"
    mid = section.rtp.muxId
    if not mid:
        raise _refuse(f"{where} has no a=mid (accepted: a unique a=mid per media section)")
    if mid in mids:
        raise _refuse(f"{where} repeats a=mid:{quoted(mid)} (accepted: a unique a=mid per media section)")
    mids.add(mid)
    ice = section.ice
    if not ice.usernameFragment or not ice.password:
        raise _refuse(f"{where} has no a=ice-ufrag/a=ice-pwd (accepted: ICE credentials, RFC 8839)")
    if not (ICE_CHARS.fullmatch(ice.usernameFragment) and 4 <= len(ice.usernameFragment) <= 256
            and ICE_CHARS.fullmatch(ice.password) and 22 <= len(ice.password) <= 256):
        raise _refuse(f"{where} has a malformed a=ice-ufrag or a=ice-pwd (accepted: 4-256 and 22-256 "
                      "characters of A-Z a-z 0-9 + /)")
    if section.dtls is None:
        raise _refuse(f"{where} has no a=setup (accepted: a=setup:actpass, active or passive)")
    supported = [f for f in section.dtls.fingerprints if f.algorithm.lower() in X509_DIGEST_ALGORITHMS]
    if not supported:
        raise _refuse(f"{where} has no a=fingerprint this server can verify (accepted: "
                      f"{', '.join(X509_DIGEST_ALGORITHMS)})")
    for fingerprint in supported:
        size = DIGEST_BYTES[fingerprint.algorithm.lower()]
        if not FINGERPRINT.fullmatch(fingerprint.value) or len(fingerprint.value) != 3 * size - 1:
            raise _refuse(f"{where} has a malformed {fingerprint.algorithm} fingerprint "
                          f"{quoted(fingerprint.value)} (accepted: {size} hex bytes separated by colons)")
    if section.kind in ("audio", "video"):
        if section.direction is None:  # RFC 8866 defaults to sendrecv, but aiortc cannot answer without one
            raise _refuse(f"{where} has no direction (accepted: a=sendonly, a=recvonly, a=sendrecv or "
                          "a=inactive)")
        if not section.rtcp_mux:
            raise _refuse(f"{where} has no a=rtcp-mux (accepted: RTP and RTCP multiplexed, RFC 8858)")
        if not find_common_codecs(CODECS[section.kind], section.rtp.codecs):
            offered = ", ".join(sorted({c.mimeType.split("/", 1)[-1] for c in section.rtp.codecs})) or "none"
            accepted = ", ".join(sorted({c.mimeType.split("/", 1)[1] for c in CODECS[section.kind]
                                         if not c.mimeType.endswith("/rtx")}))
            raise _refuse(f"{where} offers no codec this server has (offered: {offered[:80]}; "
                          f"accepted: {accepted})")
    for candidate in section.ice_candidates:
        _check_candidate(where, candidate)


def _check_candidate(where: str, candidate) -> None:
    if not 1 <= candidate.port <= 65535:
        raise _refuse(f"{where} has a candidate with port {quoted(candidate.port)} (accepted: 1 to 65535)")
    if candidate.protocol.lower() not in ("udp", "tcp") or candidate.type not in CANDIDATE_TYPES:
        raise _refuse(f"{where} has a candidate of protocol {quoted(candidate.protocol)} and type "
                      f"{quoted(candidate.type)} (accepted: udp or tcp; {', '.join(CANDIDATE_TYPES)})")
    if not 1 <= candidate.component <= 256 or not 0 <= candidate.priority < 1 << 32:
        raise _refuse(f"{where} has a candidate with component {quoted(candidate.component)} and priority "
                      f"{quoted(candidate.priority)} (accepted: 1 to 256; 0 to 2^32-1)")
    try:
        ipaddress.ip_address(candidate.ip)
    except ValueError:
        if not candidate.ip.endswith(".local") or not 6 < len(candidate.ip) <= 255:
            raise _refuse(f"{where} has a candidate address {quoted(candidate.ip)} (accepted: an IP address "
                          "or an mDNS .local name)") from None


def check_offer(sdp: str, role: str) -> Offer:
    """The checked offer for ``role`` ("whip": it must send audio; "whep": it must receive something);
    OfferError saying what is wrong and what is accepted otherwise."""
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # noqa: BLE001 - aiortc's parser raises assorted errors on garbage
        raise _refuse(f"not SDP ({type(exc).__name__}); accepted is an SDP offer (RFC 8866) with audio "
                      "and/or video media sections") from None
    media: dict[str, str] = {}
    mids: set[str] = set()
    for index, section in enumerate(description.media):
        if section.kind in ("audio", "video"):
            if section.kind in media:
                raise _refuse(f"a second {section.kind} section (accepted: at most one audio and one video "
                              "section)")
            media[section.kind] = section.direction
        _check_section(index, section, mids)
    if not media:
        raise _refuse("no audio or video media section")
    for group in description.group:  # aiortc gives a bundle the transport of its first mid: it must exist
        missing = [str(mid) for mid in group.items if str(mid) not in mids]
        if group.semantic == "BUNDLE" and missing:
            raise _refuse(f"a=group:BUNDLE names mid {quoted(missing[0])}, which no media section has "
                          "(accepted: a bundle of the offer's own mids)")
    if not any(section.ice_candidates for section in description.media):
        raise _refuse("no ICE candidates (this server takes no trickled candidates: send the offer once "
                      "ICE gathering is complete)")
    if role == "whip" and media.get("audio") not in SENDING:
        raise _refuse("a WHIP offer must send audio (a sendonly audio section)")
    if role == "whep" and not any(direction in RECEIVING for direction in media.values()):
        raise _refuse("a WHEP offer must receive something (recvonly video and/or audio)")
    return Offer(sdp, media)
