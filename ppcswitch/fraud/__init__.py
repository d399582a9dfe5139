"""Fraud prevention and call quality from what the switch itself sees.

signals: pure checks of one call against its facts and recent history;
score: the 0-100 score with its explanation; lists: block/allow lists;
alerts: per-publisher flagged rate and per-buyer unanswered rate over a window;
scorer: the optional external transcript/AI scorer interface (off by default);
service: the controller's runtime state (I/O at the edges, decisions here).
"""
