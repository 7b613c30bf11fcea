# The llmserve image: operator, gateway and simulator in one (`llmserve operator|gateway|sim ...`).
# Not built in this repository's CI: the development machines have no container engine.
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir . && rm -rf /src
USER 65532:65532
ENTRYPOINT ["llmserve"]
