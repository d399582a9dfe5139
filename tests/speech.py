"""Test speech: sentences spoken by espeak-ng, made 8 kHz mu-law telephone audio by sox, and RTP
pcap files SIPp plays into a call (play_pcap_audio)."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from fixtures_asterisk import require_services

SAMPLES_PER_PACKET = 160  # 20 ms at 8 kHz


def need_tools() -> None:
    missing = [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]
    if missing:
        why = f"{' and '.join(missing)} not installed (scripts/setup.sh installs them)"
        if require_services():
            pytest.fail(why)
        pytest.skip(why)


def say(parts: list[tuple[str, int, str]], out: Path, gap: float = 0.8) -> bytes:
    """Raw 8 kHz mu-law of the parts ((voice, words per minute, text)) with `gap` seconds between
    them and 0.5 s of silence around; also written to `out` (.ul)."""
    pieces = []
    for i, (voice, speed, text) in enumerate(parts):
        wav = out.with_name(f"{out.stem}-{i}.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text], check=True)
        ul = out.with_name(f"{out.stem}-{i}.ul")
        subprocess.run(["sox", "-q", str(wav), "-r", "8000", "-c", "1", "-t", "ul", str(ul),
                        "pad", "0.5" if i == 0 else str(gap), "0.5" if i == len(parts) - 1 else "0"], check=True)
        pieces.append(ul.read_bytes())
    data = b"".join(pieces)
    out.write_bytes(data)
    return data


def rtp_pcap(ulaw: bytes, path: Path, ssrc: int = 0x1234ABCD) -> float:
    """A pcap of RTP/PCMU packets (payload type 0, 20 ms each) carrying `ulaw`; returns its seconds."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]  # Ethernet
    if len(ulaw) % SAMPLES_PER_PACKET:
        ulaw += b"\xff" * (SAMPLES_PER_PACKET - len(ulaw) % SAMPLES_PER_PACKET)  # mu-law silence
    for seq, off in enumerate(range(0, len(ulaw), SAMPLES_PER_PACKET)):
        payload = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, off, ssrc) + ulaw[off:off + SAMPLES_PER_PACKET]
        udp = struct.pack("!HHHH", 6000, 6002, 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), seq & 0xFFFF, 0, 64, 17, 0,
                         bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])) + udp
        frame = b"\x00" * 12 + b"\x08\x00" + ip
        usec = seq * 20_000
        out.append(struct.pack("<IIII", usec // 1_000_000, usec % 1_000_000, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))
    return len(ulaw) / 8000


def pcmu_scenario(src: Path, dest: Path, pcap_in_root: str) -> None:
    """A copy of a talking SIPp scenario (uac_talk.xml / uas_talk.xml) offering PCMU and playing `pcap_in_root`."""
    text = src.read_text()
    text = text.replace("/usr/share/sip-tester/g711a.pcap", pcap_in_root)
    text = text.replace("RTP/AVP 8 101", "RTP/AVP 0 101").replace("RTP/AVP 8\n", "RTP/AVP 0\n")
    text = text.replace("a=rtpmap:8 PCMA/8000", "a=rtpmap:0 PCMU/8000")
    assert pcap_in_root in text and "PCMU" in text
    dest.write_text(text)
