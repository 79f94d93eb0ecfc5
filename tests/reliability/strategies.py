"""Hypothesis strategies and settings shared by the property and fuzz tests.

The settings are bounded and derandomized: CI runs the same examples every time, in seconds.
Set `QUICKCHAT_FUZZ_EXAMPLES` to a multiplier (say 20) to search longer on a workstation.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from quickchat_async.emulator import ErrorText

from .rule import SECRETS


#: How many times more examples than CI runs (`QUICKCHAT_FUZZ_EXAMPLES=20 nox -s faults`).
SCALE = max(1, int(os.environ.get("QUICKCHAT_FUZZ_EXAMPLES", "1")))


def bounded(max_examples: int, **options: object) -> settings:
    """Settings for one property: no deadline, a fixed set of examples, no example database."""
    return settings(
        max_examples=max_examples * SCALE,
        deadline=None,
        derandomize=SCALE == 1,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        **options,  # type: ignore[arg-type]
    )


# --- server texts --------------------------------------------------------------------------

#: Every error text the endpoint documents, in both flavors, with its placeholders filled in.
DOCUMENTED_TEXTS = tuple(
    text.format(conv_id="c-9", scenario_id="s-9", name="text", expected="a string")
    for name, text in vars(ErrorText).items()
    if name.isupper() and isinstance(text, str)
)


@st.composite
def mutated(draw: st.DrawFn, texts: st.SearchStrategy[str]) -> str:  # noqa: PLR0911
    """A text as a proxy or a server might garble it: wrapped, cased, padded, cut, or echoed."""
    text = draw(texts)
    how = draw(
        st.sampled_from(["as is", "upper", "lower", "padded", "html", "json", "cut", "secret"])
    )
    if how == "upper":
        return text.upper()
    if how == "lower":
        return text.lower()
    if how == "padded":
        return draw(st.text(" \t\r\n", max_size=4)) + text + draw(st.text(" \t\r\n", max_size=4))
    if how == "html":
        return f"<html><head><title>{text}</title></head><body><p>{text}</p></body></html>"
    if how == "json":
        return json.dumps({"detail": text})
    if how == "cut":
        return text[: draw(st.integers(0, len(text)))]
    # A server that echoes the request: the credential must still not reach a message.
    return f"{text} {draw(st.sampled_from(SECRETS))} {draw(st.text(max_size=20))}"


server_texts = (
    mutated(st.sampled_from(DOCUMENTED_TEXTS))
    | st.text(max_size=400)
    | mutated(st.text(max_size=80))
    | st.just("x" * 5000)
)

# --- Retry-After --------------------------------------------------------------------------

_dates = st.datetimes(
    min_value=dt.datetime(1970, 1, 2),  # noqa: DTZ001 -- made aware below
    max_value=dt.datetime(9998, 12, 31),  # noqa: DTZ001
).map(lambda when: email.utils.format_datetime(when.replace(tzinfo=dt.UTC), usegmt=True))

retry_after_values = (
    st.integers(0, 10**30).map(str)
    | st.integers(-(10**6), -1).map(str)
    | st.floats(allow_nan=True, allow_infinity=True).map(str)
    | st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str)
    | _dates
    | _dates.map(lambda d: d.replace("GMT", "+0200"))
    | _dates.map(lambda d: d.removesuffix(" GMT"))
    | st.text(max_size=40)
    | st.text("0123456789.-+e ", max_size=12)
    | st.text("0123456789²³¹٣۳߃०", min_size=1, max_size=5)
)

# --- HTTP responses -------------------------------------------------------------------------

STATUSES = (
    st.sampled_from([200, 201, 204, 301, 302, 307, 308, 400, 401, 403, 404, 409, 422, 429])
    | st.sampled_from([500, 502, 503, 504])
    | st.integers(100, 599)
)

#: Header values as raw bytes: any octet but CR, LF and NUL (which no HTTP parser lets through).
header_bytes = st.binary(max_size=30).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\0", b"")
)
header_values = (
    retry_after_values.map(
        lambda v: v.encode("utf-8", "replace").replace(b"\r", b"").replace(b"\n", b"")
    )
    | header_bytes
    | st.sampled_from([b"gzip", b"deflate", b"br", b"identity", b"0", b"10", b"999999999"])
)
headers = st.dictionaries(
    st.sampled_from(
        [
            "retry-after",
            "Retry-After",
            "content-type",
            "content-length",
            "content-encoding",
            "location",
            "x-other",
        ]
    ),
    header_values,
    max_size=4,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=8,
)
#: Bodies shaped like a reply, with each field possibly missing, of the wrong type, or odd.
reply_shaped = st.fixed_dictionaries(
    {},
    optional={
        "reply": st.text(max_size=40) | json_values,
        "conv_id": st.sampled_from(["conv-1", "", "c" * 300]) | json_values,
        "ord_number": st.integers(-5, 10**20) | json_values,
        "src": st.integers() | json_values,
    },
)
bodies = (
    reply_shaped.map(lambda v: json.dumps(v).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
    | server_texts.map(lambda t: t.encode("utf-8", "surrogatepass"))
    | st.binary(max_size=300)
)
