"""``cgr ui``: a terminal dashboard over the run store (Textual).

``data`` reads the store and the run directories (no Textual in it), ``actions`` cancels
and retries runs through the same functions as ``cgr cancel`` / ``cgr retry``, and ``app``
is the Textual application. Textual is imported only when ``cgr ui`` starts.
"""

from __future__ import annotations
