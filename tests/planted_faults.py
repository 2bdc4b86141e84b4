"""The web or gRPC process with one bug planted: listing topics raises, over REST and over gRPC, as a fault of ours
would. tests/test_logs.py starts it to see how a fault is logged by the real process::

    python -m tests.planted_faults web -b 127.0.0.1 -p 9000 eventrelay.asgi:application
    python -m tests.planted_faults grpc --port 50051
"""

import os
import sys

PLANTED = "a bug planted by tests/planted_faults.py"


def broken(*_args: object, **_kwargs: object) -> None:
    raise RuntimeError(PLANTED)


def plant() -> None:
    import django

    django.setup()
    import api.views
    import grpc_api.servicers

    api.views.list_topics_as = broken  # type: ignore[assignment]
    grpc_api.servicers.list_topics_as = broken  # type: ignore[assignment]


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eventrelay.settings")
    kind, arguments = sys.argv[1], sys.argv[2:]
    if kind == "web":
        from eventrelay import webserver  # first: it installs the reactor daphne runs on

        plant()
        webserver.main(arguments)
    else:
        from django.core.management import execute_from_command_line

        plant()
        execute_from_command_line(["manage.py", "grpcserver", *arguments])


if __name__ == "__main__":
    main()
