"""Run plumbing: recipes, type checks, fit, resume, checkpoint I/O, export, loggers, bench, CLI.

The only sub-package that reads omegaconf recipes; the training core never imports it.
"""
