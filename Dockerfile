# InsV2V Studio demo on an NVIDIA GPU, served on port 7860 as a non-root user.
#   docker build -t insv2v-studio .
#   docker run --gpus all -p 7860:7860 insv2v-studio                              # the bundled toy editor
#   docker run --gpus all -p 7860:7860 -e INSV2V_MODEL=OWNER/NAME insv2v-studio   # another model (a hub id or a
#                                                                                 # folder mounted with -v)
# The torch wheels from PyPI bring their own CUDA libraries; the image needs only the driver from the host.
FROM nvidia/cuda:12.8.1-base-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# Spaces and most clusters run containers as uid 1000; so does this one.
RUN userdel --remove ubuntu 2>/dev/null || true; useradd --create-home --uid 1000 user
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv

WORKDIR /home/user/app
COPY requirements.txt pyproject.toml ./
RUN pip install -r requirements.txt
COPY --chown=user . .
RUN pip install --no-deps -e . && chown -R user /home/user

USER user
ENV HOME=/home/user \
    HF_HOME=/home/user/.cache/huggingface \
    INSV2V_CACHE_DIR=/home/user/.cache/insv2v-app \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860
EXPOSE 7860
CMD ["python", "app.py"]
