"""Keeping HTTP/2 header blocks out of DEBUG logs.

With an HTTP/2 `http_client` (`httpx2.AsyncClient(http2=True)`), the `hpack` library logs, at
DEBUG, every header it adds to its table and every header block it encodes or decodes: the
`Authorization` header included, so the token can be read (or decoded) from the log. The SDK
cannot change that library; it keeps its records out of logs that the SDK's own logging setup
turns to DEBUG. `guard_header_blocks(handler)` is what that setup calls on its handler.
"""

from __future__ import annotations

import logging
from typing import Final


__all__ = ["HEADER_BLOCK_LOGGERS", "HeaderBlockFilter", "guard_header_blocks"]

#: The loggers of the HTTP/2 stack that can log header blocks (and their children).
HEADER_BLOCK_LOGGERS: Final = ("hpack", "h2")


def _is_header_logger(name: str) -> bool:
    return any(name == root or name.startswith(f"{root}.") for root in HEADER_BLOCK_LOGGERS)


class HeaderBlockFilter(logging.Filter):
    """Drops DEBUG records of the HTTP/2 stack's loggers (`hpack`, `h2`), which carry headers."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record but a DEBUG one of `hpack` or `h2`."""
        return record.levelno > logging.DEBUG or not _is_header_logger(record.name)


def guard_header_blocks(handler: logging.Handler) -> None:
    """Keep HTTP/2 header blocks out of what `handler` writes, and out of DEBUG altogether.

    The filter goes on the handler (a logger's filter would not see its children's records),
    and the HTTP/2 stack's loggers are set no lower than INFO, so that they do not even build
    those records.
    """
    if not any(isinstance(existing, HeaderBlockFilter) for existing in handler.filters):
        handler.addFilter(HeaderBlockFilter())
    for name in HEADER_BLOCK_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.INFO:
            logger.setLevel(logging.INFO)
