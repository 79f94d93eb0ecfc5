"""The logging switch: ``QUICKCHAT_LOG=info`` or ``debug`` sends the SDK's records to stderr.

Read once, when `quickchat_async` is imported (as openai's SDK reads ``OPENAI_LOG``). Only the
SDK's own loggers (``quickchat_async`` and those under it, such as ``quickchat_async.stores``)
are turned on; the root logger and the libraries below the SDK (httpx2, httpcore, h2, hpack,
aiohttp) are left as they are, except that the HTTP/2 stack's (hpack, h2) are kept above
DEBUG when the switch turns DEBUG on: hpack's DEBUG records hold encoded header blocks, from
which a token can be decoded. No record of the SDK carries a credential; message text appears
only in DEBUG records.
"""

from __future__ import annotations

import logging
import os
from typing import Final


__all__ = [
    "ENV",
    "HEADER_BLOCK_LOGGERS",
    "HeaderBlockFilter",
    "configure_from_env",
    "guard_header_blocks",
]

ENV: Final = "QUICKCHAT_LOG"
_LEVELS: Final = {"info": logging.INFO, "debug": logging.DEBUG}
_FORMAT: Final = "[%(asctime)s %(levelname)s %(name)s] %(message)s"


class _SwitchHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stderr handler the switch adds; recognised so that a re-import adds no second one."""


def configure_from_env() -> None:
    """Apply ``QUICKCHAT_LOG`` to the ``quickchat_async`` logger; other values are ignored."""
    level = _LEVELS.get(os.environ.get(ENV, "").strip().lower())
    if level is None:
        return
    logger = logging.getLogger("quickchat_async")
    logger.setLevel(level)
    if not any(isinstance(handler, _SwitchHandler) for handler in logger.handlers):
        handler = _SwitchHandler()  # stderr
        handler.setFormatter(logging.Formatter(_FORMAT))
        logger.addHandler(handler)
        guard_header_blocks(handler)


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
