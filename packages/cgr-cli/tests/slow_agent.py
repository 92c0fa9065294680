#!/usr/bin/env python3
"""The scripted agent (fake_claude.py) after a pause of ``SLOW_AGENT_SECONDS`` (0.5 s by
default): a job that takes about as long as the scheduling tests and benchmark need."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

if sys.argv[1:] != ["--version"]:  # cgr's question before a run is answered at once
    time.sleep(float(os.environ.get("SLOW_AGENT_SECONDS", "0.5")))
fake = str(Path(__file__).with_name("fake_claude.py"))
os.execv(sys.executable, [sys.executable, fake, *sys.argv[1:]])  # noqa: S606 - become the agent
