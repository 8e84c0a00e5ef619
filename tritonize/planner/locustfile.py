"""The file `bench` and `plan` hand to `locust -f`: one concrete user class per way of calling a system.
The command line names the class (`locust -f locustfile.py GrpcLoad --scenario FILE [--rate R]`), so no
environment variable chooses anything."""

from tritonize.planner.locust_users import FastApiUser, OpenAIUser, TritonGrpcUser, TritonHttpUser


class GrpcLoad(TritonGrpcUser):
    pass


class HttpLoad(TritonHttpUser):
    pass


class FastApiLoad(FastApiUser):
    pass


class OpenAILoad(OpenAIUser):
    pass

