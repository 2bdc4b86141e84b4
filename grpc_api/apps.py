from django.apps import AppConfig


class GrpcApiConfig(AppConfig):
    name = "grpc_api"
