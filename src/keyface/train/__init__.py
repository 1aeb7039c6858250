"""Training the learned generator: data preparation, pairs, losses and the training loop.

``keyface train prepare`` caches crops, motion and codec-degraded references of a set of clips;
``keyface train fit`` trains a generator on them (seeded, resumable, CPU or CUDA).
"""
