# escalator: a multi-stage image. Not built on the development machines (no Docker engine there);
# CI lints it with hadolint. Build: docker build -t escalator:0.1.0 .
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md requirements.lock ./
COPY escalator ./escalator
COPY migrations ./migrations
# Every dependency pinned and checked against its hash (requirements.lock), then escalator itself.
RUN python -m venv /opt/escalator \
    && /opt/escalator/bin/pip install --no-cache-dir --require-hashes -r requirements.lock \
    && /opt/escalator/bin/pip install --no-cache-dir --no-deps .

FROM python:3.11-slim-bookworm
# No build tools in the final stage: only the virtual environment built above.
COPY --from=build /opt/escalator /opt/escalator
COPY ladders /etc/escalator/ladders
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin escalator \
    && mkdir -p /var/lib/escalator \
    && chown escalator /var/lib/escalator
ENV PATH=/opt/escalator/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ESCALATOR_DATA_DIR=/var/lib/escalator \
    ESCALATOR_HTTP_HOST=0.0.0.0
USER 10001
EXPOSE 8080
ENTRYPOINT ["escalator"]
CMD ["run"]
