"""examples/otel_console.py: spans of the emulator's turns, on the console exporter."""

from __future__ import annotations

import json
import re

from .test_examples import run_example


def spans(out: str) -> list[dict[str, object]]:
    """The JSON spans the console exporter printed (among the metrics it printed)."""
    blocks = re.findall(r"^\{\n.*?^\}$", out, re.DOTALL | re.MULTILINE)
    return [data for data in map(json.loads, blocks) if "context" in data]


class TestOtelConsole:
    def test_prints_the_spans_of_each_turn_under_the_apps_own(self):
        """Two turn spans (the second retried after a 503), children of the app's span."""
        out = run_example("otel_console.py")
        by_name: dict[str, list[dict[str, object]]] = {}
        for span in spans(out):
            by_name.setdefault(str(span["name"]), []).append(span)
        (app,) = by_name["handle chat"]
        first, retried = by_name["invoke_agent"]
        for turn in (first, retried):
            assert turn["kind"] == "SpanKind.CLIENT"
            assert turn["parent_id"] == app["context"]["span_id"]  # type: ignore[index]
            assert turn["attributes"]["gen_ai.provider.name"] == "quickchat"  # type: ignore[index]
        assert retried["attributes"]["http.request.resend_count"] == 1  # type: ignore[index]
        assert "gen_ai.client.operation.duration" in out
