"""The configuration: the typed model, loading and validation, and the ``cgr init`` template.
The bottom layer of cgr_cli: it imports nothing of ``run``, ``schedule`` or the commands."""
