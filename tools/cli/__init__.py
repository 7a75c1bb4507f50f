"""The ``batch-runner`` command, the product's command line.

:mod:`tools.cli.main` is the entry point, :mod:`tools.cli.kafka` the local broker's subcommands and
:mod:`tools.cli.demo` the one-command demo. The other subcommands (``submit``, ``consume``,
``serve-model``...) live with the work they do; :mod:`tools.cli.main` imports each only when
it runs.
"""
