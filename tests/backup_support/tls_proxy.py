"""TLS in front of moto's S3 server, for pgBackRest.

moto's server (werkzeug's) answers every request with `Connection: close`
and closes the socket without TLS's close_notify; pgBackRest, reading such
a body to the end (a PUT's empty answer), fails with OpenSSL 3's
"unexpected eof while reading". This terminates TLS and ends each
connection cleanly: moto serves plain HTTP behind it on loopback.

usage: tls_proxy.py LISTEN_HOST LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT CERT KEY
Prints "ready" once it listens.
"""

import asyncio
import ssl
import sys


async def pipe(reader, writer, half_close):
    try:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    if half_close:
        try:
            writer.write_eof()
        except (OSError, RuntimeError, NotImplementedError):
            pass


async def handle(client_reader, client_writer, upstream):
    try:
        up_reader, up_writer = await asyncio.open_connection(*upstream)
    except OSError:
        client_writer.close()
        return
    to_upstream = asyncio.create_task(pipe(client_reader, up_writer, True))
    await pipe(up_reader, client_writer, False)
    # The answer is complete: close_notify, then the socket.
    try:
        client_writer.close()
        await asyncio.wait_for(client_writer.wait_closed(), 10)
    except (ConnectionError, ssl.SSLError, OSError, asyncio.TimeoutError):
        pass
    to_upstream.cancel()
    up_writer.close()


async def main():
    host, port, up_host, up_port, cert, key = sys.argv[1:7]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    upstream = (up_host, int(up_port))
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, upstream), host, int(port), ssl=context, backlog=128
    )
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
