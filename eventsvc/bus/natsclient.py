"""nats-py's client, kept connected: the one place that overrides its internals.

nats-server answers a protocol violation (a subject past its control line, a message past
`max_payload`, a slow consumer, an authorization change) with `-ERR` and closes the
connection. nats-py then closes the *client* for good: every later publish fails and
nothing reconnects, so one bad message would cut the service off its bus until restarted.
Here such an error is treated like a lost connection: logged, and the client reconnects
(with its subscriptions), as it does when the socket drops. During the first connect the
error still ends `connect()` (wrong credentials must fail start-up), and a permissions
violation, which the server does not close the connection for, stays an error callback.

The contract is tested against a real nats-server (tests/bus/test_client.py): if a nats-py
release renames these internals, that test fails rather than the service going deaf.
"""

from __future__ import annotations

from nats import errors
from nats.aio.client import Client as _NatsPyClient
from nats.protocol.parser import PERMISSIONS_ERR

from eventsvc import logs

log = logs.get("eventsvc.bus")


class NatsClient(_NatsPyClient):
    async def _process_err(self, err_msg: str) -> None:
        if not self.is_connected or PERMISSIONS_ERR in err_msg:
            await super()._process_err(err_msg)
            return
        reason = err_msg.strip().strip("'")
        log.warning("nats server closed the connection; reconnecting", error=reason[:200])
        await self._process_op_err(errors.Error(f"nats: {reason}"))
