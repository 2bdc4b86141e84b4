"""WhiteNoise's middleware, usable on Django's asynchronous path.

WhiteNoise's middleware is synchronous only. One synchronous middleware makes Django run every request's whole
chain on a thread of its own, so an asynchronous view (a consumer Fetch long-polling for up to 30 seconds) would
hold a thread while it waits. This subclass serves static files as WhiteNoise does (on a thread: it reads files)
and passes every other request straight on, asynchronously when the rest of the chain is.
"""

from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest
from whitenoise.middleware import WhiteNoiseMiddleware  # type: ignore[import-untyped]


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any = None, **kwargs: Any) -> None:
        super().__init__(get_response, **kwargs)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        return super().__call__(request)

    async def _acall(self, request: HttpRequest) -> Any:
        static_file = self.find_file(request.path_info) if self.autorefresh else self.files.get(request.path_info)
        if static_file is not None:
            return await sync_to_async(self.serve, thread_sensitive=False)(static_file, request)
        return await self.get_response(request)
