"""One run, start to end: the pipeline (claim, workspace, agent, commit/push, pull request,
report), the agent adapter, prompt, git and artifacts. Uses ``config``, never ``schedule``."""
