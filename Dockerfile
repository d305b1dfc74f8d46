# hpasc in a container: every stage and tool from the shell, on a GPU (`docker run --gpus all ...`)
# or on the CPU (the same image without --gpus). The default base is Debian's Python 3.11 image,
# without torch: the pinned torch and torchvision of requirements.txt are installed, so the image
# runs the torch the test suite runs on (tests/test_docker.py holds the two together). PyPI's torch
# brings its own CUDA libraries; the host needs only NVIDIA's driver and container toolkit.
#   docker build -t hpasc .
#   docker run --rm --gpus all --ipc=host -v "$PWD/data:/data" hpasc hpasc-infer -i /data/test -e /data/ensemble.yaml ...
# --build-arg BASE=IMAGE builds on another Python 3.11 image; one that already has torch (the
# official PyTorch image) keeps that torch instead (scripts/make_venv.sh), which the suite is not
# run on. PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS and PIP_NO_INDEX, given as build
# arguments, reach pip while the image is built and stay out of it (scripts/docker_check.sh builds
# from a local folder of wheels that way).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
WORKDIR /opt/hpasc
COPY requirements.txt ./
COPY scripts/make_venv.sh scripts/install_requirements.sh scripts/
RUN scripts/make_venv.sh /opt/venv requirements.txt
# The stage scripts sit in the working directory (`docker run IMAGE python infer.py ...`), and the
# project is installed (no dependencies: they are above) so that hpasc and its hpasc-* commands are
# on PATH.
COPY . .
RUN python -m pip install --no-deps --no-build-isolation . && rm -rf build hpasc.egg-info
CMD ["hpasc", "--help"]
