# Data Factory: build the wheel (with the compiled encoder fast path), run as non-root.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY daemon daemon
COPY packs packs
COPY schemas schemas
COPY config config
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/datafactory --create-home datafactory
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY config /etc/datafactory/configs
USER datafactory
WORKDIR /var/lib/datafactory
ENV DATAFACTORY_CONFIGS=/etc/datafactory/configs \
    DATAFACTORY_LEDGER=sqlite:////var/lib/datafactory/ledger.db \
    DATAFACTORY_LISTEN=127.0.0.1:9400
EXPOSE 9400
# To publish the API: -e DATAFACTORY_LISTEN=0.0.0.0:9400 -e DATAFACTORY_TOKEN=... -p 9400:9400
# (the daemon refuses a non-loopback bind without a token). SIGTERM drains and exits 0.
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:9400/healthz', timeout=2)"
STOPSIGNAL SIGTERM
ENTRYPOINT ["datafactory"]
CMD ["serve"]
