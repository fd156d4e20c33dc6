"""Run plumbing: fit, resume, checkpoint I/O, export, bench, CLI.

Recipes, checkpoint rebuilding, the run folder and the errors live below it (``ssl_toolkit.recipe``,
``ssl_toolkit.run_folder``, ``ssl_toolkit.errors``) so that ``eval/`` can use them without importing
``run/``; the training core never imports any of them.
"""
