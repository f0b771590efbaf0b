# dialobot on the CPU: `docker build -t dialobot .`, then see docker-compose.yml (or README, "Operations").
# Two stages: the first installs into a virtualenv (pip, build tools, wheels caches stay there), the second
# copies only that virtualenv onto a clean python:3.11-slim and runs it as an unprivileged user.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/dialobot
ENV PATH=/opt/dialobot/bin:$PATH
# torch first, from PyTorch's CPU-only index: from PyPI it would bring the CUDA build (several GB, no use here).
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
# Only what the package needs, so that editing tests or docs does not invalidate the layers below.
COPY pyproject.toml README.md /src/
COPY bot /src/bot
COPY adapters /src/adapters
COPY storage /src/storage
# With the CTranslate2 (default), OpenVINO (many channels at once) and remote (openai) backends, each
# selectable with settings alone. IPEX needs its own torch 2.8 stack (README "Backends") and is not in this
# image. `safety`: the default safety filter's classifier.
RUN pip install "/src[ctranslate2,openvino,openai,safety]"

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin dialobot \
    && mkdir -p /data /cache \
    && chown dialobot:dialobot /data /cache
COPY --from=build /opt/dialobot /opt/dialobot
COPY docker/config.toml /etc/dialobot/config.toml
# History goes to SQLite on /data unless DIALOBOT_DATABASE_URL says otherwise (docker-compose.yml: PostgreSQL);
# downloaded and built models go to /cache. Both are volumes, so they survive a new image.
ENV PATH=/opt/dialobot/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DIALOBOT_DATA_DIR=/data \
    DIALOBOT_CACHE_DIR=/cache/dialobot \
    HF_HOME=/cache/huggingface \
    DIALOBOT_DATABASE_URL=sqlite+aiosqlite:////data/dialobot.db
USER dialobot
WORKDIR /data
VOLUME ["/data", "/cache"]
# /healthz and /metrics (docker/config.toml listens on 0.0.0.0 inside the container).
EXPOSE 9464
# Loading (or, on first start, downloading) the model takes minutes: start-period covers it.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10m --retries=3 \
    CMD ["dialobot", "healthcheck", "--config", "/etc/dialobot/config.toml"]
ENTRYPOINT ["dialobot"]
CMD ["run", "--config", "/etc/dialobot/config.toml"]
