"""Offline evaluation of checkpoints: embed a split, linear probe, k-NN, label-free selection, plots."""
