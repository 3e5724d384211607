# The image compose builds for the exporters and the target renderer (not for the stacks themselves).
# python:3.11-slim is multi-arch: on a DGX Spark (aarch64) it builds natively; elsewhere
# `docker buildx build --platform linux/arm64 .`. tests/test_image.py checks that every dependency has an
# aarch64 wheel for this Python and that the packages copied here are enough for the compose services.
FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends smartmontools nvme-cli \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/sparkrig
COPY pyproject.toml README.md ./
COPY configs configs
COPY exporters exporters
COPY analysis analysis
COPY rig rig
COPY stacksim stacksim
COPY locustfiles locustfiles
RUN pip install --no-cache-dir -e .
