# One image for every service; the command picks the service (python -m services.<name>).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Dependencies first, in their own layer: rebuilt only when pyproject.toml changes.
COPY pyproject.toml README.md ./
RUN mkdir -p shared services && touch shared/__init__.py services/__init__.py \
    && pip install . \
    && pip uninstall --yes stock-tracker

COPY shared ./shared
COPY services ./services
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --home-dir /app stocktracker

USER stocktracker
# Each service's metrics port (shared/catalog.py); the gateway also serves HTTP on 8080.
EXPOSE 8080 9101 9102 9103 9104 9105 9106 9107
CMD ["python", "-m", "services.gateway"]
