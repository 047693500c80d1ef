# mcepl node / collector image: CPU PyTorch plus the package in a virtual environment, run as the
# non-root user `mcepl`.
#   docker build -t mcepl:latest .
#   docker run --rm mcepl:latest node --help
# `docker compose up` (see docker-compose.yml) builds it too.
#
# Behind a proxy, on an air-gapped host, or without Docker Hub (README "Building the image"):
#   --build-arg BASE=IMAGE        any Debian/Ubuntu-like image with python3 (3.11 for the pinned
#                                 CPU torch wheel) and its venv module, e.g. the stand-in
#                                 mcepl-base:bookworm made by docker/stand-in-base.sh
#   docker/extra/certs/*.crt      extra CA certificates (PEM) pip must trust (a TLS-inspecting proxy)
#   docker/extra/wheels/*.whl     a wheelhouse pip searches first (a local torch wheel: then the
#                                 PyTorch index is not used; every wheel: with pip.conf no-index)
#   docker/extra/pip.conf         pip configuration (index-url of a mirror, no-index, ...)
#   --build-arg HTTPS_PROXY=...   Docker passes the proxy variables to the build without an ARG
# docker/extra/ is used only in the first stage (deps): none of it reaches the final image.
ARG BASE=python:3.11-slim

# ---- stage 1: a venv with torch and every dependency (cached while pyproject.toml and
# docker/extra/ do not change; a change of the package's code does not rebuild it)
FROM ${BASE} AS deps
# The CPU build of PyTorch (as scripts/install.sh pins it), so pip does not pull CUDA packages.
ARG TORCH=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The venv keeps the image's own Python packages (Debian's, or the base image's) out of the way.
RUN python3 -m venv /opt/mcepl
COPY docker/extra/ /tmp/extra/
COPY docker/pip-env.sh /tmp/pip-env.sh
RUN torch_index="${TORCH_INDEX}"; \
    if ls /tmp/extra/wheels/torch-*.whl >/dev/null 2>&1; then torch_index=""; fi; \
    sh /tmp/pip-env.sh /opt/mcepl/bin/pip install "${TORCH}" \
       ${torch_index:+--index-url "$torch_index"}
COPY pyproject.toml /tmp/pyproject.toml
# The package's dependencies as pyproject.toml lists them (tomllib: Python 3.11 or newer).
RUN /opt/mcepl/bin/python -c "import tomllib; \
print(chr(10).join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt && \
    sh /tmp/pip-env.sh /opt/mcepl/bin/pip install -r /tmp/requirements.txt "setuptools>=64" wheel

# ---- stage 2: the image: that venv plus the package itself (offline: --no-deps --no-index)
FROM ${BASE}
ARG UID=1000
ENV PATH=/opt/mcepl/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib
COPY --from=deps /opt/mcepl /opt/mcepl
COPY pyproject.toml README.md /tmp/src/
COPY mcepl /tmp/src/mcepl
COPY node /tmp/src/node
COPY protocol /tmp/src/protocol
COPY topology /tmp/src/topology
COPY launcher /tmp/src/launcher
# The check runs from / (no source tree left at all): the installed console script must work.
RUN PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 /opt/mcepl/bin/pip install --quiet \
      --no-deps --no-index --no-build-isolation /tmp/src && \
    rm -rf /tmp/src && \
    useradd --create-home --uid "${UID}" --shell /usr/sbin/nologin mcepl && \
    cd / && mcepl --help >/dev/null && mcepl node --help >/dev/null && \
    mcepl collect --help >/dev/null && mcepl topology keys --help >/dev/null && \
    rm -rf /tmp/matplotlib  # a root-owned cache dir here would be unwritable for the user
USER mcepl
WORKDIR /home/mcepl

# Node: 5555 (ROUTER, see the topology's "bind"); collector: 5600 (PULL).
EXPOSE 5555 5600
ENTRYPOINT ["mcepl"]
CMD ["--help"]
