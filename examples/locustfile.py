"""A Locust load test of an AI Agent: scripted conversations, a mix of kb_topics, think times.

Each simulated visitor opens a conversation under one of three Knowledge Base topics (billing
half the time, shipping a third, technical the rest), says its script turn by turn with a
pause to think between turns, then waits a little before the next conversation. Every turn is a
request in Locust's statistics, named by its kb_topic.

Against the emulator that comes with the SDK (no account), in two terminals::

    quickchat-async emulator                      # serves http://127.0.0.1:8765
    QUICKCHAT_API_TOKEN=demo-token QUICKCHAT_SCENARIO_ID=demo \\
        locust -f examples/locustfile.py --host http://127.0.0.1:8765

Against your AI Agent (mind your plan's request rate: see docs/fanout.md)::

    QUICKCHAT_API_TOKEN=... QUICKCHAT_SCENARIO_ID=... \\
        locust -f examples/locustfile.py --host https://app.quickchat.ai

Then open http://localhost:8089, or add ``--headless -u 50 -r 5 -t 5m --csv run`` for a run
without the web UI and its CSV reports. On several machines, start one ``--master`` and a
``--worker --master-host <master>`` (or ``--processes -1``) per machine, each with the same
environment; docs/fanout.md shows how.
"""

from __future__ import annotations

import random

import gevent
from locust import between, task

from quickchat_async.locust import QuickchatUser


#: What a visitor says, by kb_topic: one conversation each.
SCRIPTS = {
    "billing": [
        "Hello!",
        "How do refunds work?",
        "How long until the money is back on my card?",
    ],
    "shipping": [
        "Hi, where is my parcel?",
        "Can I change the delivery address?",
        "Do you ship abroad?",
    ],
    "technical": [
        "I cannot sign in.",
        "It says my password is wrong, but it is not.",
        "The reset email never arrives.",
        "Thanks, that worked!",
    ],
}


class Visitor(QuickchatUser):
    """A website visitor with a question about billing, shipping or a technical problem."""

    #: The pause between two conversations of one visitor.
    wait_time = between(2, 5)
    #: Seconds a visitor thinks between two turns of a conversation (least, most).
    think_time = (1.0, 4.0)
    #: At most this many seconds for a whole turn, retries included (then it fails).
    client_options = {"deadline": 60}  # noqa: RUF012 -- Locust's style of class settings

    @task(3)
    def billing(self) -> None:
        self.converse("billing")

    @task(2)
    def shipping(self) -> None:
        self.converse("shipping")

    @task(1)
    def technical(self) -> None:
        self.converse("technical")

    def converse(self, kb_topic: str) -> None:
        """Say the topic's script in a new conversation, thinking between turns."""
        conv = self.conversation(kb_topic=kb_topic)
        for number, text in enumerate(SCRIPTS[kb_topic]):
            if number:
                gevent.sleep(random.uniform(*self.think_time))  # noqa: S311 -- not a secret
            conv.say(text)
