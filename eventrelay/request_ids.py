"""The request id of each HTTP request: the client's ``X-Request-Id`` when it is a sane one, else a new one; set for
everything the request logs and queues (eventrelay.logs) and returned in the response's ``X-Request-Id``.

Asynchronous and synchronous: one synchronous middleware would make Django run every request's chain on a thread
of its own (see eventrelay/static_files.py). The id is not reset when the response leaves this middleware: Django
logs a 4xx after the whole chain has returned, and that line must carry the id too. It is reset once the response is
closed (``request_finished``), so that a thread a synchronous server (or the test client) reuses logs nothing else
under it; under ASGI every request runs in an asyncio task, a context, of its own anyway.
"""

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.signals import request_finished
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponseBase

from eventrelay.logs import accepted_request_id, request_id

HEADER = "X-Request-Id"


class RequestIdMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        rid = self._start(request)
        return self._finish(self.get_response(request), rid)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        rid = self._start(request)
        get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
        return self._finish(await get_response(request), rid)

    @staticmethod
    def _start(request: HttpRequest) -> str:
        rid = accepted_request_id(request.headers.get(HEADER))
        request_id.set(rid)
        return rid

    @staticmethod
    def _finish(response: HttpResponseBase, rid: str) -> HttpResponseBase:
        response[HEADER] = rid
        return response


@receiver(request_finished, dispatch_uid="eventrelay.request_ids.forget")
def forget_the_request_id(**_kwargs: object) -> None:
    request_id.set("")
