# mcepl node / collector image: CPU PyTorch plus the package, run as the non-root user `mcepl`.
#   docker build -t mcepl:latest .
#   docker run --rm mcepl:latest node --help
# `docker compose up` (see docker-compose.yml) builds it too.
FROM python:3.11-slim

# The CPU build of PyTorch (as scripts/install.sh pins it), so pip does not pull CUDA packages.
ARG TORCH=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG UID=1000

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib

RUN pip install "${TORCH}" --index-url "${TORCH_INDEX}"

WORKDIR /opt/mcepl
COPY pyproject.toml README.md ./
COPY mcepl ./mcepl
COPY node ./node
COPY protocol ./protocol
COPY topology ./topology
COPY launcher ./launcher
RUN pip install . && python -c "import mcepl.launcher.cli, mcepl.node.main, mcepl.launcher.collector"

RUN useradd --create-home --uid "${UID}" --shell /usr/sbin/nologin mcepl
USER mcepl
WORKDIR /home/mcepl

# Node: 5555 (ROUTER, see the topology's "bind"); collector: 5600 (PULL).
EXPOSE 5555 5600
ENTRYPOINT ["mcepl"]
CMD ["--help"]
