"""Open N concurrent streamed chat requests, hold them, report how many finished cleanly.

usage: streams.py URL MODEL N
"""
import asyncio
import json
import sys


async def one(host, port, path, body, done):
    reader, writer = await asyncio.open_connection(host, port)
    req = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    writer.write(req)
    await writer.drain()
    data = await reader.read()
    writer.close()
    # The body is chunk-encoded; the stream ends with its [DONE] event.
    if b"data: [DONE]" in data and b"event: error" not in data and data.startswith(b"HTTP/1.1 200"):
        done.append(1)


async def main():
    url, model, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    hostport, path = url.removeprefix("http://").split("/", 1)
    host, port = hostport.split(":")
    body = json.dumps({"model": model, "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    done = []
    await asyncio.gather(*(one(host, int(port), "/" + path, body, done) for _ in range(n)))
    print(f"{len(done)}/{n} streams completed")


asyncio.run(main())
