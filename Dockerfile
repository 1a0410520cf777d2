FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CHRONIK_DATA_DIR=/data \
    CHRONIK_KAFKA_HOST=0.0.0.0 \
    CHRONIK_HTTP_HOST=0.0.0.0

WORKDIR /opt/chronik
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /data chronik \
    && mkdir -p /data && chown chronik /data

USER chronik
VOLUME ["/data"]
EXPOSE 9092 8080
ENTRYPOINT ["chronik"]
