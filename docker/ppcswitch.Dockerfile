# The ppcswitch controller. Build context: the repository root.
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml README.md ./
COPY ppcswitch ./ppcswitch
RUN pip install --no-cache-dir . \
 && useradd --system --home-dir /var/lib/ppcswitch ppcswitch \
 && mkdir -p /var/lib/ppcswitch \
 && chown ppcswitch:ppcswitch /var/lib/ppcswitch

USER ppcswitch
WORKDIR /var/lib/ppcswitch
# The database (SQLite by default) lives in the ppcswitch-data volume.
VOLUME ["/var/lib/ppcswitch"]
CMD ["ppcswitch", "serve"]
