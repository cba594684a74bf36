"""A real MCP client (the Python `mcp` package) that the Rust test drives over JSON lines.

    python bridge.py stdio <chorus binary> <server url>   # launches `chorus mcp`, token in CHORUS_TOKEN
    python bridge.py http <server url>/mcp                 # Streamable HTTP, token in CHORUS_TOKEN

Each line on stdin is {"id": n, "tool": name, "args": {...}} or {"id": n, "list_tools": true};
for each, one line {"id": n, "started_ms": t} is written when the call starts, then one with
the outcome: {"id", "is_error", "result" (structured content), "text", "elapsed_ms",
"done_ms"}; a protocol error is {"id", "exception": "..."}. Times are Unix ms.
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
