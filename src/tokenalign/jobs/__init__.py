"""tokenalign.jobs: the runs behind the CLI commands, and the only layer that wires packages.

One module per job (``demo``, ``train``, ``align``, ``reward``, ``eval``), each with its
config class and a ``run_*`` function. A job builds models, data, reward sources and
evaluators from the packages below it and calls them in order; the logic it calls lives
below (``policy``, ``rewards``, ``rollout``, ``evaluate``, ...). Nothing outside
``commands`` and ``cli`` imports this package.
"""
