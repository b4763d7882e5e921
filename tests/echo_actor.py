"""A tiny actor for the runtime's smoke tests: answers on `test.echo` and counts what it answered."""

from __future__ import annotations

from typing import Any

from nats.aio.msg import Msg

from shared.runtime import Actor, Context, main


class Echo(Actor):
    name = "echo"
    description = "Test actor: echoes requests on test.echo"

    def __init__(self) -> None:
        self.answered = 0
        self._sub: Any = None

    async def start(self, ctx: Context) -> None:
        async def answer(subject: str, msg: Msg) -> None:
            if msg.data == b"crash":
                raise RuntimeError("asked to crash")
            self.answered += 1
            await msg.respond(msg.data)

        handle = ctx.instrumented(answer)

        async def receive(msg: Msg) -> None:
            await handle(msg.subject, msg)

        self._sub = await ctx.nc.subscribe("test.echo", cb=receive)

    async def stop(self) -> None:
        await self._sub.unsubscribe()

    def status(self) -> dict[str, Any]:
        return {"answered": self.answered}


if __name__ == "__main__":
    main(Echo)
