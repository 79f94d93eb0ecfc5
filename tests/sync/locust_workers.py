"""The example locustfile's visitors, for the distributed test: quick, and named by worker.

`test_locust.py` runs this file with one master and two workers. The visitors are the example's
(`examples/locustfile.py`), with short think times and waits, and each turn's name says which
worker sent it, so that the master's CSV statistics show both workers' turns.
"""

from __future__ import annotations

from typing import Any

from locust import constant

import examples.locustfile as example
from quickchat_async.locust import LocustConversation


class QuickVisitor(example.Visitor):
    wait_time = constant(0.05)
    think_time = (0.0, 0.05)

    def conversation(self, **options: Any) -> LocustConversation:
        conv = super().conversation(**options)
        conv.name = f"{options['kb_topic']} (worker {self.environment.runner.worker_index})"
        return conv
