"""The ``batch-runner`` command, the product's command line.

:mod:`cli.main` is the entry point, :mod:`cli.kafka` the local broker's subcommands and
:mod:`cli.demo` the one-command demo. The other subcommands (``submit``, ``consume``,
``serve-model``...) live with the work they do; :mod:`cli.main` imports each only when
it runs.
"""
