# One image for the dynascope API and its Celery workers (see docker-compose.yml).
#
#   CPU image (default):  docker build -t dynascope:cpu .
#   GPU image:            docker build -t dynascope:gpu --build-arg TORCH_INDEX_URL=https://pypi.org/simple .
#                         (PyPI's Linux torch wheels bundle CUDA; a download.pytorch.org/whl/cuXXX
#                         index picks a specific CUDA build)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, in its own layer: it is by far the largest dependency and changes least, and
# choosing its index here decides whether the image is CPU-only or CUDA-capable.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# Then the package itself (its torch requirement is already satisfied and left alone).
COPY . /tmp/dynascope-src
RUN pip install /tmp/dynascope-src && rm -rf /tmp/dynascope-src

# Never run as root. DYNASCOPE_HOME and DYNASCOPE_DATA_DIR point at directories the user owns,
# so a named volume mounted on them starts out owned by it too.
RUN useradd --create-home --uid 10001 --user-group dynascope \
    && mkdir -p /var/lib/dynascope /data \
    && chown dynascope:dynascope /var/lib/dynascope /data
ENV DYNASCOPE_HOME=/var/lib/dynascope \
    DYNASCOPE_DATA_DIR=/data
USER dynascope
WORKDIR /home/dynascope

EXPOSE 8000
# The API (it migrates the database first); the worker containers run `dynascope worker`.
CMD ["dynascope", "api", "--host", "0.0.0.0", "--port", "8000"]
