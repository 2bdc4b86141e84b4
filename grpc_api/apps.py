from django.apps import AppConfig


class GrpcApiConfig(AppConfig):
    name = "grpc_api"

    def ready(self) -> None:
        from events import encoding
        from grpc_api.wire import WireEncoding

        # Every process stores each event's gRPC form as it publishes, whichever API the event came in by.
        encoding.register(WireEncoding())
