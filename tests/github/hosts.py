"""Local HTTP(S) servers that stand for a host: the GitHub git host, or "another host"
an event names. Each records the Authorization header of every request it gets.

HTTPS uses a self-signed certificate for 127.0.0.1; git trusts it through
`GIT_SSL_CAINFO` (see `trust`), so git talks real TLS to it as it would to GitHub.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Cert:
    """A self-signed certificate for 127.0.0.1 and its key, as files."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def make_cert(directory: Path) -> Cert:
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    out = Cert(directory / "cert.pem", directory / "key.pem")
    out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))  # fmt: skip
    return out


def trust(cert: Cert, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make git (run by eventsvc with the process environment) trust `cert`."""
    monkeypatch.setenv("GIT_SSL_CAINFO", str(cert.cert))


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None


@dataclass
class Host:
    """A running server; `url` is its base (`https://127.0.0.1:PORT`)."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    handler: Handler | None = None  # None: 401 asking for Basic credentials

    @property
    def authorizations(self) -> list[str]:
        """Every Authorization header this host received (none is what we want)."""
        return [s.authorization for s in self.seen if s.authorization is not None]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.method, request.path_qs,
                              request.headers.get("Authorization")))  # fmt: skip
        if self.handler is not None:
            return await self.handler(request)
        # what a host that wants credentials answers: git would send any it has
        return web.Response(status=401, text="credentials, please\n",
                            headers={"WWW-Authenticate": 'Basic realm="give me"'})  # fmt: skip


@asynccontextmanager
async def serve_host(cert: Cert | None = None, handler: Handler | None = None) -> AsyncIterator[
    Host
]:
    """A recording server on 127.0.0.1 (HTTPS with `cert`, else plain HTTP)."""
    host = Host(handler=handler)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", host._handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0,
                       ssl_context=cert.server_context() if cert else None)  # fmt: skip
    await site.start()
    port = runner.addresses[0][1]
    host.url = f"{'https' if cert else 'http'}://127.0.0.1:{port}"
    try:
        yield host
    finally:
        await runner.cleanup()


def redirect_to(target: Callable[[], str]) -> Handler:
    """A handler answering 302 to `target()` + the same path and query."""

    async def handle(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(target() + request.path_qs)

    return handle
