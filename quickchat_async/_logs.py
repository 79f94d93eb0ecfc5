"""The logging switch: ``QUICKCHAT_LOG=info`` or ``debug`` sends the SDK's records to stderr.

Read once, when `quickchat_async` is imported (as openai's SDK reads ``OPENAI_LOG``). Only the
SDK's own loggers (``quickchat_async`` and those under it, such as ``quickchat_async.stores``)
are turned on; the root logger and the libraries below the SDK (httpx2, httpcore, h2, hpack,
aiohttp) are left as they are: hpack's DEBUG records hold encoded header blocks, from which a
token can be decoded. No record of the SDK carries a credential; message text appears only in
DEBUG records.
"""

from __future__ import annotations

import logging
import os
from typing import Final


__all__ = ["ENV", "configure_from_env"]

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
