"""Experiments on real multi-series panels: `sovereign experiment run`."""
