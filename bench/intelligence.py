"""Call intelligence benchmark: speed and accuracy of the transcription engine, and what it costs calls.

    python bench/intelligence.py                      # speed, call rate one core keeps up with, WER
    python bench/intelligence.py --engine pkg.mod:Cls # the same figures for another engine
    python bench/intelligence.py --throughput 60      # also bench/throughput.py at 60 calls/s, twice:
                                                      # workers idle, then workers busy transcribing

Speech set: tests/data/speech (8 kHz mu-law sentences made with espeak-ng, references in
sentences.txt), shipped so that engines are compared on the same audio.

Figures:
- speed: seconds of audio per CPU second (this process, one core), model load apart;
- call rate: a recorded call has two legs of its length; with each party speaking half the
  time, the CPU one call costs, and the calls per hour one worker (one core) keeps up with, for
  calls of --call-seconds;
- word error rate (substitutions + deletions + insertions over reference words) per sentence
  and overall;
- with --throughput: bench/throughput.py's ratio and post-dial delay with the workers idle and
  with `--workers` worker processes (niced as `intelligence.nice`) transcribing all the time.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ppcswitch.intelligence.engine import load_engine, read_pcm16  # noqa: E402
from ppcswitch.intelligence.rules import normalise  # noqa: E402

SPEECH = REPO / "tests" / "data" / "speech"


def wer(reference: list[str], hypothesis: list[str]) -> tuple[int, int]:
    """(edit distance in words, reference words)."""
    prev = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, 1):
        cur = [i] + [0] * len(hypothesis)
        for j, h in enumerate(hypothesis, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1], len(reference)


def speech_set() -> list[tuple[str, str, Path]]:
    out = []
    for line in (SPEECH / "sentences.txt").read_text().splitlines():
        ident, _voice, text = line.split("\t")
        out.append((ident, text, SPEECH / f"{ident}.wav"))
    return out


def pcm_wav(pcm: bytes, path: Path, rate: int = 8000) -> None:
    import struct

    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", len(pcm)) + pcm)


def leg(seconds: float, tmp: Path) -> Path:
    """A leg of `seconds`: the set's sentences with silence between them, speech about half the time."""
    pieces, total = [], 0
    sentences = [read_pcm16(str(p))[0] for _, _, p in speech_set()]
    i = 0
    while total < seconds * 8000 * 2:
        s = sentences[i % len(sentences)]
        pieces += [s, bytes(len(s))]  # as much silence as speech
        total += 2 * len(s)
        i += 1
    path = tmp / f"leg-{seconds:g}.wav"
    pcm_wav(b"".join(pieces)[: int(seconds * 8000) * 2], path)
    return path


def busy_worker(spec: str, nice: int, stop) -> None:
    os.nice(nice)
    engine = load_engine(spec)
    files = [str(p) for _, _, p in speech_set()]
    while not stop.is_set():
        for f in files:
            engine.transcribe(f)


def throughput(rate: float, seconds: float, extra: list[str]) -> str:
    cmd = [sys.executable, str(REPO / "bench" / "throughput.py"), "--rate", f"{rate:g}", "--seconds", f"{seconds:g}",
           *extra]
    out = subprocess.run(cmd, capture_output=True, text=True)
    return out.stdout + (out.stderr[-2000:] if out.returncode else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", default="pocketsphinx")
    ap.add_argument("--call-seconds", type=float, default=120.0, help="call length for the call-rate figure")
    ap.add_argument("--throughput", type=float, metavar="RATE", help="also run bench/throughput.py at RATE calls/s")
    ap.add_argument("--throughput-seconds", type=float, default=20)
    ap.add_argument("--workers", type=int, default=1, help="busy worker processes during --throughput")
    ap.add_argument("--nice", type=int, default=10)
    args = ap.parse_args(argv)

    t0 = time.process_time()
    engine = load_engine(args.engine)
    load = time.process_time() - t0
    print(f"engine {engine.name}: model loaded in {load:.2f} CPU s")

    errors = words = 0
    audio = cpu = 0.0
    print(f"\n{'id':3} {'WER':>5}  reference / hypothesis")
    for ident, text, path in speech_set():
        pcm, rate = read_pcm16(str(path))
        t = time.process_time()
        hyp = " ".join(s.text for s in engine.transcribe(str(path)))
        cpu += time.process_time() - t
        audio += len(pcm) / 2 / rate
        e, n = wer(normalise(text).split(), normalise(hyp).split())
        errors, words = errors + e, words + n
        print(f"{ident:3} {e / n:5.0%}  {text}\n{'':10}{hyp}")
    print(f"\nword error rate: {errors / words:.1%} ({errors} errors in {words} words, {len(speech_set())} sentences)")
    print(f"speed on the set: {audio:.1f} s of audio in {cpu:.2f} CPU s = {audio / cpu:.2f} audio seconds per CPU second")

    with tempfile.TemporaryDirectory() as tmp:
        path = leg(args.call_seconds, Path(tmp))
        t = time.process_time()
        engine.transcribe(str(path))
        per_leg = time.process_time() - t
    per_call = 2 * per_leg
    print(f"a {args.call_seconds:g} s call (two legs, speech half the time): {per_call:.1f} CPU s to transcribe; "
          f"one core keeps up with {3600 / per_call:.0f} such calls per hour "
          f"({args.call_seconds * 2 / per_call:.2f} leg-seconds per CPU second)")

    if args.throughput:
        print(f"\nbench/throughput.py at {args.throughput:g} calls/s, transcription workers idle:")
        print(throughput(args.throughput, args.throughput_seconds, []))
        stop = multiprocessing.get_context("spawn").Event()
        procs = [multiprocessing.get_context("spawn").Process(target=busy_worker, args=(args.engine, args.nice, stop))
                 for _ in range(args.workers)]
        for p in procs:
            p.start()
        try:
            time.sleep(2)  # models loaded, transcribing
            print(f"bench/throughput.py at {args.throughput:g} calls/s, {args.workers} worker(s) transcribing "
                  f"(nice {args.nice}):")
            print(throughput(args.throughput, args.throughput_seconds, []))
        finally:
            stop.set()
            for p in procs:
                p.join(10)
                if p.is_alive():
                    p.terminate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
