import asyncio

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from grpc_api.server import serve


class Command(BaseCommand):
    help = "Run the gRPC API server (grpc.aio) until SIGTERM."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.ER_BIND_HOST)
        parser.add_argument("--port", type=int, default=settings.ER_GRPC_PORT)

    def handle(self, *args: object, host: str, port: int, **options: object) -> None:
        asyncio.run(serve(host, port))
