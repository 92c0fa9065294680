"""The offline demo: a simulated GitHub, a scripted agent, and the walk-through that
``cgr demo`` prints. May use ``schedule``, ``run`` and ``config``; nothing below imports it."""
