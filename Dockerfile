# The voxledger engine image: the package and its command line, nothing else.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY domain domain
COPY projections projections
COPY adapters adapters
COPY scripts scripts
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT []
