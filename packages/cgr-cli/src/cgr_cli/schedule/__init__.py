"""Scheduling: plan a pass, ``cgr tick`` (fork mode), ``cgr daemon`` (subprocess mode), the
reaper, cancel/retry control, locks and metrics. Uses ``run`` and ``config``, never the
commands above it."""
