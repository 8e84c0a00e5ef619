# syntax=docker/dockerfile:1
# tritonize on NVIDIA's Triton image: checkpoints converted on CPU in a build stage, served by the
# image's own tritonserver (python, onnxruntime and tensorrt backends) through `tritonize serve`.
#
#   docker build -t tritonize .                                    # the demo set
#   docker build --build-arg CONVERT="bert --model sentence-transformers/all-MiniLM-L6-v2 --flavour native --engine tensorrt" \
#                --build-arg TENSORRT_BINDINGS="tensorrt-cu13==<the image's TensorRT version>" -t tritonize-trt .
#   docker run --gpus all -p 8000-8003:8000-8003 -p 9000:9000 -v tritonize-engines:/var/cache/tritonize/engines \
#              --name triton tritonize
#
# The OpenAI-compatible gateway (/v1/embeddings, /v1/completions, /v1/chat/completions, /v1/audio/speech) is in
# the image too: `serve` has no gateway option, so it is the image's second entrypoint, run beside the server
# in the server's network namespace (port 9000 is published on the server's container above). Give it API keys
# when it binds beyond loopback; the image's HEALTHCHECK probes the server's port, so the gateway runs without it:
#   docker run -d --network container:triton --no-healthcheck -v "$PWD/api_keys:/run/secrets/api_keys:ro" \
#              --entrypoint tritonize tritonize gateway --url 127.0.0.1:8001 --host 0.0.0.0 --port 9000 \
#              --api-key-file /run/secrets/api_keys
#
# Why 26.07 (Triton 2.71.0): anything reachable from a network must run a release at or past NVIDIA's
# latest Triton security bulletin. The latest when this was pinned, of 2026-08-18 (CVE-2026-47627,
# path traversal, CVSS 9.8; CVE-2026-47628/47629, denial of service; CVE-2026-47606/47630), is fixed
# in 26.06. Every earlier one is fixed by then too: 2026-07-14 (CVE-2026-47476..47482, among them an
# authentication bypass) in 26.05, 2026-07-01 in 26.04, 2026-05-19 (authentication bypasses
# CVE-2026-24206/24207) in 26.03, 2026-04-07 in 26.02, 2026-03-24 (large compressed payloads) in 26.01,
# 2025-12-02 (oversized payloads) in 25.10, 2025-11-17 in 25.09, 2025-09-16 (Python backend) in 25.08,
# 2025-08-04 (HTTP stack overflow, Python-backend out-of-bounds writes) in 25.07. 26.07 is the newest
# release at or past 26.06. Re-check NVIDIA's bulletins before bumping; the embedded 2.51 binary
# (nvidia-pytriton) predates all of these and is for loopback development only.
ARG TRITON_RELEASE=26.07

# -- 1. build: convert the chosen checkpoints on CPU --------------------------------------------------
FROM python:3.12-slim-bookworm AS build
# "demo" (the demo set, built offline) or `tritonize convert` argument lists separated by ';'.
ARG CONVERT=demo
# The converter stack pins the CPU build of torch (an unpinned torch pulls a multi-GB CUDA build).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
WORKDIR /src
# One copy of the context: .dockerignore is the allow-list of what the wheel is built from.
COPY . .
RUN pip wheel --no-cache-dir --no-deps -w /dist . \
    && pip install --no-cache-dir --extra-index-url "$TORCH_INDEX" -c constraints.txt "$(ls /dist/tritonize-*.whl)[convert]"
RUN mkdir -p /models && if [ "$CONVERT" = "demo" ]; then \
        HF_HUB_OFFLINE=1 tritonize demo --convert-only --repository /models; \
    else \
        echo "$CONVERT" | tr ';' '\n' | while read -r args; do \
            [ -z "$args" ] || tritonize convert $args --repository /models || exit 1; \
        done; \
    fi

# -- 2. runtime: NVIDIA's Triton, the repository and only tritonize[runtime,gateway] --------------------
FROM nvcr.io/nvidia/tritonserver:${TRITON_RELEASE}-py3 AS runtime
# TensorRT's Python bindings, only to build `--engine tensorrt` steps at start; they must match the
# image's TensorRT (see the release notes), or the plans they build will not load.
ARG TENSORRT_BINDINGS=""
COPY --from=build /dist/ /tmp/dist/
COPY constraints.txt /tmp/constraints.txt
# The Python backend's stub runs the image's python3, so the steps' code goes into its site-packages; the
# gateway extra is the second entrypoint's (no torch either way).
RUN pip install --no-cache-dir --break-system-packages -c /tmp/constraints.txt "$(ls /tmp/dist/tritonize-*.whl)[runtime,gateway]" \
    && if [ -n "$TENSORRT_BINDINGS" ]; then pip install --no-cache-dir --break-system-packages "$TENSORRT_BINDINGS"; fi \
    && rm -rf /tmp/dist /tmp/constraints.txt \
    && mkdir -p /var/cache/tritonize/engines && chown 1000:1000 /var/cache/tritonize/engines
# Owned by the server's user: built TensorRT plans are linked into the repository at start.
COPY --from=build --chown=1000:1000 /models /opt/tritonize/model_repository
VOLUME /var/cache/tritonize/engines
# triton-server (uid 1000) comes with the image.
USER triton-server
ENV HOME=/tmp
# http, grpc, metrics, health (the entrypoint's), and the gateway's default port (the second entrypoint's).
EXPOSE 8000 8001 8002 8003 9000
HEALTHCHECK --interval=10s --timeout=3s --start-period=600s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8003/v2/health/ready', timeout=2)"]
# Exec form: tritonize is PID 1 and gets SIGTERM itself (readiness off, in-flight requests finish, stop).
# The HTTP input limit (8 MiB, Triton's default is 64 MiB) bounds what one request can make the server
# allocate; `docker run IMAGE --option value` appends to (and, for these options, overrides) this line.
ENTRYPOINT ["tritonize", "serve", "--binary", "path", "--host", "0.0.0.0", "--repository", "/opt/tritonize/model_repository", "--http-port", "8000", "--grpc-port", "8001", "--metrics-port", "8002", "--health-port", "8003", "--http-max-input-size", "8388608", "--engine-cache", "/var/cache/tritonize/engines"]
