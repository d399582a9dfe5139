"""What runs inside a transcription worker process (never in the controller's event loop).

`transcribe_call` reads a call's leg recordings (`<name>-caller.wav`, `<name>-buyer.wav` beside the
mixed `<name>.wav`; the mixed file alone when the legs are missing), transcribes each leg with the
configured engine (loaded once per process), redacts digit runs before anything leaves the process,
optionally mutes them in the stored audio, and returns plain data.
"""

from __future__ import annotations

import os
import time
import wave
from pathlib import Path

from ppcswitch.intelligence.engine import Engine, EngineError, load_engine
from ppcswitch.intelligence.redact import redact_tokens

_ENGINES: dict[str, Engine] = {}
MUTE_PAD = 0.15  # seconds muted either side of a redacted run


def init(nice: int) -> None:
    """Process initializer: lower the worker's CPU priority so Asterisk and the controller come first."""
    if nice > 0:
        try:
            os.nice(nice)
        except OSError:
            pass


def engine(spec: str) -> Engine:
    e = _ENGINES.get(spec)
    if e is None:
        e = _ENGINES[spec] = load_engine(spec)
    return e


def leg_files(directory: str, recording: str) -> list[tuple[str, Path]]:
    base = Path(directory) / recording
    stem = base.with_suffix("")
    legs = [(side, stem.parent / f"{stem.name}-{side}.wav") for side in ("caller", "buyer")]
    legs = [(side, p) for side, p in legs if p.is_file()]
    if legs:
        return legs
    if base.is_file():
        return [("call", base)]
    raise FileNotFoundError(f"no recording {recording} (nor its legs) in {directory}")


def audio_seconds(path: Path) -> float:
    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes() / float(w.getframerate() or 1)
    except (wave.Error, EOFError, OSError):
        return 0.0


def mute(path: Path, spans: list[tuple[float, float]]) -> None:
    """Silence `spans` (seconds) of a 16-bit PCM WAV in place (written beside, then renamed)."""
    with wave.open(str(path), "rb") as w:
        params, frames = w.getparams(), bytearray(w.readframes(w.getnframes()))
    width, rate = params.sampwidth * params.nchannels, params.framerate
    for start, end in spans:
        a = max(0, int((start - MUTE_PAD) * rate)) * width
        b = min(len(frames), int((end + MUTE_PAD) * rate) * width)
        if b > a:
            frames[a:b] = bytes(b - a)
    tmp = path.with_name(path.name + ".redacting")
    with wave.open(str(tmp), "wb") as w:
        w.setparams(params)
        w.writeframes(bytes(frames))
    os.replace(tmp, path)


def transcribe_call(directory: str, recording: str, spec: str, min_digits: int, redact_audio: bool) -> dict:
    legs = leg_files(directory, recording)
    eng = engine(spec)
    started = time.process_time()
    segments, redactions, speech, audio, muted = [], 0, {"caller": 0, "buyer": 0, "call": 0}, 0.0, []
    for side, path in legs:
        audio += audio_seconds(path)
        spans = []
        for seg in eng.transcribe(str(path)):
            if seg.words:
                r = redact_tokens([w.text for w in seg.words], min_digits)
                spans += [(seg.words[a].start, seg.words[b - 1].end) for a, b in r.runs]
            else:
                r = redact_tokens(seg.text.split(), min_digits)
                if r.runs:
                    spans.append((seg.start, seg.end))
            redactions += len(r.runs)
            speech[side] += int(round(sum(w.end - w.start for w in seg.words) * 1000)) if seg.words \
                else int(round((seg.end - seg.start) * 1000))
            segments.append({"side": side, "start": seg.start, "end": seg.end, "text": r.text})
        if spans and redact_audio:
            muted.append((path, spans))
    error = ""
    if muted:
        mixed = Path(directory) / recording
        try:
            for path, spans in muted:
                mute(path, spans)
                if path != mixed and mixed.is_file():
                    mute(mixed, spans)  # the legs and the mixed file start together
        except OSError as exc:
            error = f"could not mute the audio: {exc}"[:300]
    segments.sort(key=lambda s: (s["start"], s["side"]))
    return {"segments": segments, "redactions": redactions, "audio_ms": int(audio * 1000),
            "cpu_ms": int((time.process_time() - started) * 1000), "engine": eng.name,
            "caller_speech_ms": speech["caller"] + speech["call"], "buyer_speech_ms": speech["buyer"],
            "error": error}


__all__ = ["EngineError", "init", "transcribe_call", "leg_files"]
