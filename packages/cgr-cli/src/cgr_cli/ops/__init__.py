"""Operating cgr: ``doctor``, systemd units, logging, process hardening and the status view.
May use ``schedule``, ``run`` and ``config``; nothing below imports it."""
