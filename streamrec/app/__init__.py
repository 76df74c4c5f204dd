"""The application: the ``streamrec`` command, the demo and its page. The top layer.

What lives where::

    cli.py        the argument parser (one function per subcommand) and ``main``: maps
                  ``streamrec.errors`` to the exit statuses of ``streamrec.exits``
    commands.py   what each subcommand does (heavy imports inside the command that needs them)
    demo.py       ``streamrec demo``: services, training, a worker process, events, the page
    signals.py    SIGTERM/SIGINT -> a stop event, for the long-running commands
    progress.py   progress of the long steps: a bar on a terminal, log lines elsewhere
    web/          the demo page: names.py (display names), api.py (what the JSON API answers),
                  server.py (HTTP) and static/ (the page itself)

May import every layer below (``streamrec.infra``, ``.worker``, ``.producer``, ``.model``,
``.als`` and the floor); nothing below imports this package (``pyproject.toml``'s import-linter
layers, ``make lint``). Within it: ``cli`` imports ``commands`` (lazily, in ``main``),
``commands`` imports ``demo`` and ``signals``, ``demo`` imports ``web`` and ``signals``; ``web``
imports none of them.
"""
