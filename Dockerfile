# One image for the flow, the local worker, the publisher and tail.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 BWSM_CACHE_DIR=/cache
COPY pyproject.toml README.md ./
COPY flows ./flows
COPY connectors ./connectors
COPY schemas ./schemas
RUN pip install .
VOLUME ["/cache"]
CMD ["bytewax-speechmatics", "--help"]
