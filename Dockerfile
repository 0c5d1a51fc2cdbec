# One image for the flow, the local worker, the publisher and tail.
# EXTRAS: [worker] is the local worker's whisper engine (docker-compose's `worker` service needs it), [dev] the test
# tools; `docker build --build-arg EXTRAS=worker .` leaves the test tools out, `EXTRAS=` makes a SaaS-only image.
FROM python:3.11-slim
ARG EXTRAS=dev,worker
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 BWSM_CACHE_DIR=/cache
COPY pyproject.toml README.md ./
COPY flows ./flows
COPY connectors ./connectors
COPY schemas ./schemas
RUN pip install ".${EXTRAS:+[${EXTRAS}]}"
VOLUME ["/cache"]
CMD ["bytewax-speechmatics", "--help"]
