# syntax=docker/dockerfile:1
# The llmserve image: one image for the operator, the gateway and the vLLM simulator
# (`llmserve operator`, `llmserve gateway`, `llmserve sim engine ...`). The chart and the operator's
# simulator pods set the subcommand themselves; `docker run IMAGE --help` lists them.
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) -t ghcr.io/llmserve/llmserve:0.1.0 .
#
# Base: python:3.11.16-slim-bookworm pinned by the multi-arch index digest recorded for that tag in
# docker-library/repo-info (repos/python/remote/3.11.16-slim-bookworm.md, build of 2026-09-01). Bump tag
# and digest together; CI's image job builds and smoke-tests the result on every pull request.
ARG PYTHON_IMAGE=python:3.11.16-slim-bookworm@sha256:c425d915a89a6dcd3183b1797ad9bd8878caff5a417f6371c8df93c8ea8b727f

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# A venv without pip: the base image's pip installs into it, so nothing of pip is copied onward.
RUN python -m venv --without-pip /opt/llmserve
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# Every dependency ships wheels for amd64 and arm64, so the slim base needs no compiler; pip compiles the
# bytecode here because the pods run with a read-only root filesystem.
RUN pip --python /opt/llmserve/bin/python install . \
 && /opt/llmserve/bin/llmserve --help >/dev/null

FROM ${PYTHON_IMAGE}
ARG VERSION=0.0.0-dev
ARG REVISION=unknown
ARG SOURCE=https://github.com/llmserve/llmserve
LABEL org.opencontainers.image.title="llmserve" \
      org.opencontainers.image.description="Kubernetes operator, OpenAI-compatible gateway and vLLM simulator for autoscaled GPU model serving" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.url="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.16-slim-bookworm"
# The final stage installs nothing: it removes the base image's pip, setuptools and wheel, adds the
# unprivileged user the chart's runAsUser names, and takes the finished venv from the build stage.
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
 && groupadd --system --gid 65532 llmserve \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin llmserve
COPY --from=build /opt/llmserve /opt/llmserve
ENV PATH=/opt/llmserve/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 65532:65532
WORKDIR /
# 8080: gateway and operator health; 9090/9091: metrics; 8000: the simulator engine.
EXPOSE 8000 8080 9090 9091
ENTRYPOINT ["llmserve"]
CMD ["--help"]
