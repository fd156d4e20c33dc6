"""Recipes and checkpoints to objects: the services both ``run/`` (fit, resume, export, the CLI) and
``eval/`` (the offline tools) build on.

``build.py`` reads and validates a recipe and builds its parts (the only omegaconf user);
``checkpoint.py`` rebuilds a trained model from a checkpoint file. Nothing here imports ``run/`` or
``eval/``; the training core never imports this package.
"""
