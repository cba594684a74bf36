"""A real MCP client (the Python `mcp` package) that the Rust test drives over JSON lines.

    python bridge.py stdio <chorus binary> <server url>   # launches `chorus mcp`, token in CHORUS_TOKEN
    python bridge.py http <server url>/mcp                 # Streamable HTTP, token in CHORUS_TOKEN

Each line on stdin is {"id": n, "tool": name, "args": {...}} or {"id": n, "list_tools": true},
{"id": n, "list_resources": true}, {"id": n, "read_resource": uri}, {"id": n, "listen": [uri…]}
(opens a `subscriptions/listen` stream; answers once acknowledged) or {"id": n, "unlisten": true};
for each, one line {"id": n, "started_ms": t} is written when the call starts, then one with
the outcome: {"id", "is_error", "result" (structured content), "text", "elapsed_ms",
"done_ms"} (or "resources", "contents", "honored", "stopped"); a protocol error is
{"id", "exception": "..."}. Times are Unix ms. While a stream is open, each event it
delivers is written as it arrives: {"notification": uri, "at_ms": t}.
"""

import asyncio
import json
import os
import sys

import httpx2
import time

from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client


def now_ms() -> float:
    return time.time() * 1000.0


def emit(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def run_listen(client, uris, ready: asyncio.Future, stop: asyncio.Event) -> None:
    """One listen stream: reports the acknowledgment on `ready`, each event as a line."""
    try:
        async with client.listen(resource_subscriptions=uris) as sub:
            ready.set_result(sub.honored.resource_subscriptions or [])

            async def pump() -> None:
                async for event in sub:
                    emit({"notification": getattr(event, "uri", None), "at_ms": now_ms()})

            pumping = asyncio.create_task(pump())
            await stop.wait()
            pumping.cancel()
            try:
                await pumping
            except asyncio.CancelledError:
                pass
    except Exception as err:
        if not ready.done():
            ready.set_exception(err)
        else:
            emit({"listen_error": f"{type(err).__name__}: {err}"})


async def main() -> None:
    token = os.environ["CHORUS_TOKEN"]
    kind = sys.argv[1]
    if kind == "stdio":
        server = StdioServerParameters(
            command=sys.argv[2],
            args=["mcp", "--url", sys.argv[3]],
            env={"CHORUS_TOKEN": token, "CHORUS_LOG": "warn"},
        )
    else:
        http = httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {token}"},
            # Long polls hold a response open: a read timeout past the longest wait.
            timeout=httpx2.Timeout(30.0, read=300.0),
        )
        server = streamable_http_client(sys.argv[2], http_client=http)
    loop = asyncio.get_running_loop()
    listening = None
    async with Client(server) as client:
        emit({"ready": True})
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            cmd = json.loads(line)
            ident = cmd["id"]
            start = now_ms()
            emit({"id": ident, "started_ms": start})
            try:
                if cmd.get("list_tools"):
                    tools = await client.list_tools()
                    emit({
                        "id": ident,
                        "tools": [
                            {"name": t.name, "input_schema": t.input_schema, "output_schema": t.output_schema}
                            for t in tools.tools
                        ],
                    })
                    continue
                if cmd.get("list_resources"):
                    listed = await client.list_resources()
                    emit({"id": ident, "resources": [r.model_dump(mode="json", by_alias=True, exclude_none=True) for r in listed.resources]})
                    continue
                if "read_resource" in cmd:
                    read = await client.read_resource(cmd["read_resource"])
                    emit({"id": ident, "contents": [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in read.contents]})
                    continue
                if "listen" in cmd:
                    ready = loop.create_future()
                    stop = asyncio.Event()
                    task = asyncio.create_task(run_listen(client, cmd["listen"], ready, stop))
                    listening = (task, stop)
                    emit({"id": ident, "honored": await ready})
                    continue
                if cmd.get("unlisten"):
                    task, stop = listening
                    stop.set()
                    await task
                    listening = None
                    emit({"id": ident, "stopped": True})
                    continue
                result = await client.call_tool(cmd["tool"], cmd.get("args", {}))
                done = now_ms()
                text = "".join(getattr(c, "text", "") for c in result.content)
                emit({
                    "id": ident,
                    "is_error": bool(result.is_error),
                    "result": result.structured_content,
                    "text": text,
                    "elapsed_ms": done - start,
                    "done_ms": done,
                })
            except Exception as err:  # a protocol-level error: reported, the loop goes on
                emit({"id": ident, "exception": f"{type(err).__name__}: {err}"})


asyncio.run(main())
