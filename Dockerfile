# The worker image: `docker compose up` builds it. Python 3.11 slim, non-root.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY stream_app ./stream_app
RUN pip install --no-cache-dir . && useradd --create-home --uid 10001 app \
    && mkdir -p /data && chown app /data
USER app
ENV STREAM_APP_DATA_DIR=/data STREAM_APP_WEB_HOST=0.0.0.0 STREAM_APP_WEB_PORT=6066
EXPOSE 6066
ENTRYPOINT ["stream-app"]
CMD ["worker"]
