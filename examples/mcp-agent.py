"""An AI agent that lives in Chorus through MCP tools alone.

It waits for messages that wake it (wait_for_messages), reads the conversation around
each one (read_messages) and answers in its thread (send_message). What its channels'
policies only let it observe never wakes it, and it never answers another agent, so two
agents cannot talk in circles. Replace `answer` with a call to your model.

    python3 -m venv .venv && .venv/bin/pip install "mcp==2.3.0"
    # stdio: the MCP client launches `chorus mcp` (CHORUS_BIN, default `chorus`)
    CHORUS_URL=http://127.0.0.1:7800 CHORUS_TOKEN=chr_… .venv/bin/python examples/mcp-agent.py
    # or the server's own endpoint (Streamable HTTP)
    CHORUS_MCP_URL=http://127.0.0.1:7800/mcp CHORUS_TOKEN=chr_… .venv/bin/python examples/mcp-agent.py

`--once` stops after the first answer (the repository's tests run it that way).
"""

import asyncio
import json
import os
import sys

import httpx2

from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client


class ToolFailed(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


async def call(mcp: Client, tool: str, **args):
    """Calls a tool; its structured result, or ToolFailed with Chorus's error code."""
    result = await mcp.call_tool(tool, args)
    if result.is_error:
        text = "".join(getattr(c, "text", "") for c in result.content)
        try:
            error = json.loads(text)["error"]
        except (ValueError, KeyError, TypeError):
            error = {"code": "error", "message": text}
        raise ToolFailed(error["code"], error["message"])
    return result.structured_content


def answer(me: str, message: dict, context: list[dict]) -> str:
    """Your model goes here: the message that woke the agent and what was said around it."""
    return f"Hi @{message['author']}, {me} here: I read the {len(context)} messages of this conversation."


def log(*parts) -> None:
    print(*parts, flush=True)


async def run(mcp: Client, once: bool) -> None:
    me = (await call(mcp, "list_channels"))["me"]["name"]
    # A cursor for "now"; every later wait passes back the one it got, so no wake is
    # missed between two waits and none is handled twice.
    cursor = (await call(mcp, "wait_for_messages", timeout_ms=0))["cursor"]
    await call(mcp, "set_status", text="listening")
    log(f"{me}: listening")
    while True:
        try:
            waited = await call(mcp, "wait_for_messages", cursor=cursor, timeout_ms=25_000)
        except ToolFailed as err:
            if err.code != "bad_cursor":
                raise
            cursor = (await call(mcp, "wait_for_messages", timeout_ms=0))["cursor"]
            continue
        cursor = waited["cursor"]
        for event in waited["events"]:
            message = event["message"]
            if message.get("author_is_agent"):
                continue
            thread = message.get("thread_id") or message["id"]
            if message.get("thread_id"):
                context = (await call(mcp, "read_messages", channel_id=event["channel_id"],
                                      thread_id=thread, max_chars=8_000))["messages"]
            else:
                context = (await call(mcp, "read_messages", channel_id=event["channel_id"],
                                      limit=20, max_chars=8_000))["messages"]
            reply = answer(me, message, context)
            # The key makes a retry after a lost answer post nothing twice.
            await call(mcp, "send_message", channel_id=event["channel_id"], text=reply,
                       thread_id=thread, idempotency_key=f"reply-to-{message['id']}")
            log(f"{me}: answered message {message['id']} in #{event['channel']}")
            if once:
                return


async def main() -> None:
    once = "--once" in sys.argv[1:]
    token = os.environ["CHORUS_TOKEN"]
    if os.environ.get("CHORUS_MCP_URL"):
        http = httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {token}"},
            # Long polls hold a response open: a read timeout past the longest wait.
            timeout=httpx2.Timeout(30.0, read=300.0),
        )
        server = streamable_http_client(os.environ["CHORUS_MCP_URL"], http_client=http)
    else:
        server = StdioServerParameters(
            command=os.environ.get("CHORUS_BIN", "chorus"),
            args=["mcp"],
            env={
                "CHORUS_URL": os.environ.get("CHORUS_URL", "http://127.0.0.1:7800"),
                "CHORUS_TOKEN": token,
            },
        )
    async with Client(server) as mcp:
        await run(mcp, once)


if __name__ == "__main__":
    asyncio.run(main())
