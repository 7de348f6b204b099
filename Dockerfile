# The memorag HTTP service (`memorag serve`, docs/service.md) in a container.
#
#   docker build -t memorag .
#   docker run -p 8000:8000 -e MEMORAG_TOKEN="$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')" \
#       -v memorag-store:/data memorag
#
# The service binds 0.0.0.0 inside the container, so it refuses to start without
# MEMORAG_TOKEN (at least 16 characters); clients send `Authorization: Bearer <token>`.
# Memorized documents live in the /data volume.
FROM python:3.12-slim

# llama-cpp-python has no wheel on PyPI: setup compiles it (~10 minutes on 2 cores).
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home memorag \
 && mkdir /data /app && chown memorag /data /app

USER memorag
WORKDIR /app
COPY --chown=memorag pyproject.toml README.md LICENSE ./
COPY --chown=memorag scripts ./scripts
COPY --chown=memorag src ./src

# The image may run on other CPUs than the one that builds it: build llama.cpp for a
# portable instruction-set tier (avx2; `--build-arg MEMORAG_LLAMA_VARIANT=avx512` or `sse42`
# to change it; scripts/llama_build_flags.py lists the tiers).
ARG MEMORAG_LLAMA_VARIANT=avx2
# The same install as scripts/setup.sh on a machine: a venv with memorag, its default
# models (joined and checked into ~/.cache/memorag/models) and a smoke check.
RUN MEMORAG_LLAMA_VARIANT="$MEMORAG_LLAMA_VARIANT" MEMORAG_VENV=/home/memorag/venv bash scripts/setup.sh \
 && rm -rf /home/memorag/.cache/pip /home/memorag/.cache/memorag/wheels

ENV PATH=/home/memorag/venv/bin:$PATH \
    MEMORAG_STORE=/data
VOLUME /data
EXPOSE 8000
CMD ["memorag", "serve", "--host", "0.0.0.0", "--port", "8000"]
