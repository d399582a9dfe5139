"""Billing: conversion rules, exact money, the immutable ledger, reports, re-rating.

Pure decisions live in `ppcswitch.qualification` and `rules`; `ledger` writes
(inside writer jobs), `reports` reads (for the CLI, the panel and the API).
"""
