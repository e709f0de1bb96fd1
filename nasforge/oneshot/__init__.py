"""Plumbing shared by one-shot strategies: the bi-level loop, relaxations of choice modules,
binarized-path sampling (ProxylessNAS) and path probabilities (DenseNAS)."""
