"""Causal LMs with their KV cache: our own graph (or optimum's), int4 recipes, parity with PyTorch."""
