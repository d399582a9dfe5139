"""Call intelligence on the operator's own machine: transcripts of recorded calls (each leg on its
own), redaction of card numbers and other digit runs, dispositions from phrase rules, and an AI
score with its reasons, which billing rules can gate on (`min_ai_score`, `deny_dispositions`).

- engine.py: the speech-to-text interface and the embedded default (pocketsphinx's US-English model,
  shipped in its wheel); `intelligence.engine = "module:Class"` plugs in another.
- redact.py, rules.py: pure text work (redaction, dispositions, the score).
- worker.py: what runs in the worker processes (CPU-heavy, never in the controller's event loop).
- runtime.py: the controller side: the durable queue (table `transcripts`), the process pool,
  storing results and re-rating the call through the ledger, metrics, retention.
"""
