"""ppcswitch: a self-hosted pay-per-call switch on Asterisk."""

__version__ = "0.1.0"
