"""``quickchat-async say``: one turn, for scripts; the reply on stdout, the conv_id on stderr."""

from __future__ import annotations

import functools
import json
from typing import Annotated

import anyio
import rich.markup
import typer

from quickchat_async import Reply

from ._connect import BaseURLOption, KBTopicOption, announce_emulator, connect
from ._output import guard, stderr


__all__ = ["say"]


def _reply_json(reply: Reply) -> dict[str, object]:
    return {
        "text": reply.text,
        "html": reply.html,
        "conv_id": reply.conv_id,
        "ord_number": reply.ord_number,
        "src": reply.src,
    }


async def _say_once(
    text: str,
    *,
    conv_id: str | None,
    kb_topic: str | None,
    context: str | None,
    base_url: str | None,
) -> Reply:
    async with connect(base_url, announce_emulator) as client:
        metadata = {"kb_topic": kb_topic} if kb_topic is not None else None
        return await client.say(
            text, conv_id=conv_id, client_metadata=metadata, message_context=context
        )


def say(  # noqa: PLR0917 -- typer passes keywords
    text: Annotated[str, typer.Argument(help="Your message.", show_default=False)],
    conv_id: Annotated[
        str | None,
        typer.Option("--conv-id", help="Continue this conversation.", show_default=False),
    ] = None,
    kb_topic: KBTopicOption = None,
    context: Annotated[
        str | None,
        typer.Option(
            "--context", help="message_context: extra context for the AI.", show_default=False
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the reply as JSON on stdout.")
    ] = False,
    base_url: BaseURLOption = None,
) -> None:
    """Send one message and print the reply (for scripts; the conv_id goes to stderr)."""
    with guard():
        reply = anyio.run(
            functools.partial(
                _say_once,
                text,
                conv_id=conv_id,
                kb_topic=kb_topic,
                context=context,
                base_url=base_url,
            )
        )
    if as_json:
        typer.echo(json.dumps(_reply_json(reply), ensure_ascii=False))
        return
    typer.echo(reply.text)
    stderr().print(f"[dim]conv_id {rich.markup.escape(reply.conv_id)}[/dim]")
