# The image compose builds for the exporters and the target renderer (not for the stacks themselves).
FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends smartmontools nvme-cli \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/sparkrig
COPY pyproject.toml README.md ./
COPY configs configs
COPY exporters exporters
COPY rig rig
COPY stacksim stacksim
COPY locustfiles locustfiles
RUN pip install --no-cache-dir -e .
