"""Speech-to-text engines: transcribe(path) -> segments with start/end seconds and text.

The default, "pocketsphinx", is the PyPI `pocketsphinx` package with the US-English model its wheel
ships (nothing is downloaded at run time). Another engine is any class named "package.module:Class"
whose instances have `name` and `transcribe(path) -> list[Segment]`, e.g. a Whisper-family package
with model files the operator provides; it is loaded once per worker process.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float


@dataclass
class Segment:
    start: float  # seconds from the start of the file
    end: float
    text: str
    words: list[Word] = field(default_factory=list)  # with times, when the engine gives them (redaction of audio)


class Engine(Protocol):
    name: str

    def transcribe(self, path: str) -> list[Segment]: ...


class EngineError(RuntimeError):
    """The engine cannot be loaded or cannot read the file."""


def _ulaw(byte: int) -> int:
    byte = ~byte & 0xFF
    sign, exponent, mantissa = byte & 0x80, (byte >> 4) & 0x07, byte & 0x0F
    sample = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -sample if sign else sample


def _alaw(byte: int) -> int:
    byte ^= 0x55
    sign, exponent, mantissa = byte & 0x80, (byte >> 4) & 0x07, byte & 0x0F
    sample = (mantissa << 4) + 8 if exponent == 0 else ((mantissa << 4) + 0x108) << (exponent - 1)
    return sample if sign else -sample


_TABLES: dict[int, bytes] = {}


def _expand(data: bytes, tag: int) -> bytes:
    import array

    table = _TABLES.get(tag)
    if table is None:
        fn = _ulaw if tag == 7 else _alaw
        table = _TABLES[tag] = array.array("h", (fn(b) for b in range(256))).tobytes()
    out = bytearray(2 * len(data))
    for i, b in enumerate(data):
        out[2 * i:2 * i + 2] = table[2 * b:2 * b + 2]
    return bytes(out)


def read_pcm16(path: str) -> tuple[bytes, int]:
    """A WAV as mono 16-bit PCM frames and its sample rate. Reads what MixMonitor writes (8 kHz signed
    linear) and telephone mu-law / A-law WAVs; other formats are refused with a clear error."""
    import array
    import struct

    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise EngineError(f"{path}: {exc}") from None
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise EngineError(f"{path}: not a WAV file")
    pos, fmt, body = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        chunk = data[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            fmt = struct.unpack("<HHIIHH", chunk[:16])
        elif cid == b"data":
            body = chunk
        pos += 8 + size + (size & 1)
    if fmt is None or body is None:
        raise EngineError(f"{path}: WAV without fmt or data")
    tag, channels, rate, _, _, bits = fmt
    if tag == 0xFFFE and len(chunk) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the sub-format's tag
        tag = 1
    if tag == 1 and bits == 16:
        pcm = body[:len(body) - len(body) % 2]
    elif tag in (6, 7) and bits == 8:
        pcm = _expand(body, tag)
    else:
        raise EngineError(f"{path}: WAV format {tag}, {bits}-bit; expected 16-bit PCM, mu-law or A-law")
    if channels > 1:  # keep the first channel
        pcm = array.array("h", pcm)[::channels].tobytes()
    return pcm, rate


def upsample2(pcm: bytes) -> bytes:
    """8 kHz -> 16 kHz by linear interpolation (the model is trained at 16 kHz)."""
    import array

    a = array.array("h", pcm)
    if not a:
        return b""
    try:
        import numpy as np  # fast path when numpy is present

        x = np.frombuffer(pcm, dtype=np.int16).astype(np.int32)
        out = np.empty(2 * len(x), dtype=np.int32)
        out[0::2] = x
        out[1:-1:2] = (x[:-1] + x[1:]) // 2
        out[-1] = x[-1]
        return out.astype(np.int16).tobytes()
    except ImportError:
        out = array.array("h", bytes(4 * len(a)))
        out[0::2] = a
        nxt = a[1:] + array.array("h", [a[-1]])
        out[1::2] = array.array("h", ((p + q) // 2 for p, q in zip(a, nxt)))
        return out.tobytes()


class PocketsphinxEngine:
    """CMU PocketSphinx with the US-English model inside the `pocketsphinx` wheel.

    Speech regions are found with its voice-activity endpointer (each becomes one line), then each
    region is decoded; word times come from the decoder's segmentation (10 ms frames)."""

    name = "pocketsphinx"

    def __init__(self) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError as exc:  # a dependency in pyproject.toml: only a broken install lands here
            raise EngineError(f"the pocketsphinx package is not installed: {exc}") from None
        self._decoder = Decoder(loglevel="FATAL")
        # The decoder carries its cepstral mean from one utterance to the next; each file starts from
        # the model's own, so a file's transcript does not depend on what the process decoded before.
        self._cmn = self._decoder.get_cmn()

    def transcribe(self, path: str) -> list[Segment]:
        from pocketsphinx import Segmenter

        pcm, rate = read_pcm16(path)
        if rate not in (8000, 16000):
            raise EngineError(f"{path}: {rate} Hz audio; expected 8000 or 16000")
        import io

        out: list[Segment] = []
        self._decoder.set_cmn(self._cmn)
        segmenter = Segmenter(sample_rate=rate, window=0.3, ratio=0.9)
        for speech in segmenter.segment(io.BytesIO(pcm)):
            audio = upsample2(speech.pcm) if rate == 8000 else speech.pcm
            if not audio:
                continue
            d = self._decoder
            d.start_utt()
            d.process_raw(audio, full_utt=True)
            d.end_utt()
            words = []
            frate = 100.0
            for seg in d.seg():
                word = seg.word.split("(")[0]
                if word.startswith("<") or word.startswith("[") or word in ("<s>", "</s>"):
                    continue
                words.append(Word(word, round(speech.start_time + seg.start_frame / frate, 2),
                                  round(speech.start_time + (seg.end_frame + 1) / frate, 2)))
            if words:
                out.append(Segment(round(speech.start_time, 2), round(speech.end_time, 2),
                                   " ".join(w.text for w in words), words))
        return out


def load_engine(spec: str) -> Engine:
    """The engine named by `intelligence.engine`: "pocketsphinx" or "package.module:Class"."""
    spec = (spec or "").strip()
    if spec == "pocketsphinx":
        return PocketsphinxEngine()
    module, sep, cls = spec.partition(":")
    if not sep or not module or not cls:
        raise EngineError(f"intelligence.engine: expected 'pocketsphinx' or 'package.module:Class', got {spec!r}")
    try:
        engine = getattr(importlib.import_module(module), cls)()
    except (ImportError, AttributeError) as exc:
        raise EngineError(f"intelligence.engine {spec!r}: {exc}") from None
    if not callable(getattr(engine, "transcribe", None)):
        raise EngineError(f"intelligence.engine {spec!r}: the class has no transcribe(path) method")
    if not getattr(engine, "name", ""):
        engine.name = spec
    return engine
