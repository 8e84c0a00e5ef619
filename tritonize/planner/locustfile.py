"""The file handed to `locust -f`: exports the one user class that TRITONIZE_USER names."""

import os

user = os.environ.get("TRITONIZE_USER", "grpc")
if user == "grpc":
    # Locust runs on gevent: gRPC must cooperate with it, before any channel exists (Locust's docs).
    import grpc.experimental.gevent as grpc_gevent

    grpc_gevent.init_gevent()

from tritonize.planner.locust_users import FastApiUser, OpenAIUser, TritonGrpcUser, TritonHttpUser  # noqa: E402

_classes = {"grpc": TritonGrpcUser, "http": TritonHttpUser, "fastapi": FastApiUser, "openai": OpenAIUser}
if user not in _classes:
    raise SystemExit(f"TRITONIZE_USER must be one of {sorted(_classes)}, not {user!r}")
LoadUser = type("LoadUser", (_classes[user],), {"abstract": False})
