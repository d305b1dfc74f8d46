# hpasc on a GPU machine: the official PyTorch CUDA runtime image, whose torch and torchvision are
# kept (install_requirements.sh turns them into constraints), plus the pinned requirements.
#   docker build -t hpasc .
#   docker run --gpus all -v "$PWD/data:/data" hpasc hpasc-download --help
ARG BASE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
FROM ${BASE}

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/hpasc
COPY requirements.txt ./
COPY scripts/install_requirements.sh scripts/
RUN PYTHON=python scripts/install_requirements.sh --keep-torch requirements.txt
# The stage scripts sit in the working directory (`docker run IMAGE python <stage>.py ...`), and the
# project is installed (no dependencies: they are above) so that its hpasc-* commands are on PATH.
COPY . .
RUN python -m pip install --no-deps .
CMD ["python", "download_publichpa.py", "--help"]
