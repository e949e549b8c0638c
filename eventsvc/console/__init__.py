"""The web console under `/ui/` and its JSON API under `/api/v1/`, served on the HTTP
port of `eventsvc run`; everything it shows is read from JetStream."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from eventsvc.config import Config
from eventsvc.console import api, ui
from eventsvc.console.auth import ConsoleAuth
from eventsvc.console.views import Problems, ServiceView, Views

__all__ = ["Console"]


class Console:
    def __init__(
        self,
        config: Config,
        service: ServiceView,
        problems: Problems = lambda: {},
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.auth = ConsoleAuth(config, environ)
        self.views = Views(config, service, problems)

    def routes(self) -> list[web.RouteDef]:
        return [*api.Api(self.views, self.auth).routes(), *ui.routes()]
