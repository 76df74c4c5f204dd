"""The demo page: display names, the JSON API and the HTTP server, one concern a module.

- ``names``: display names of items (a names file, the generated dataset's labels, the names
  that come with a model). Pure; imports the floor only.
- ``api``: ``LiveModel`` and ``DemoApp``, what each endpoint answers, from Redis and the live
  model, without HTTP. Imports ``names``, ``streamrec.als``, the floor and the producer.
- ``server``: the stdlib HTTP server (routes, handler, ``WebServer``, ``serve``) and the
  ``static/`` page it serves. Imports ``api``.

Nothing here imports ``streamrec.app.cli`` or ``commands``; ``streamrec.app.demo`` and
``commands`` import this package.
"""
