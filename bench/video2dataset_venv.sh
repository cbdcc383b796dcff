#!/usr/bin/env bash
# A venv with video2dataset 1.3.0 for bench/build_throughput.py --v2d-python VENV/bin/python.
# Its PyPI release pins torch==2.1.2 and predates numpy 2, so it is installed without its pins plus what it
# imports. torchaudio is replaced by an empty package: video2dataset imports it only in its reading-side
# dataloader, and no torchaudio build matches the CPU torch here.
set -euo pipefail
venv=${1:-/tmp/v2d}
python3.11 -m venv "$venv"
pip="$venv/bin/pip"
find_links=()
[ -d /opt/wheels ] && find_links=(--find-links /opt/wheels)
"$pip" install -q "${find_links[@]}" torch==2.13.0
"$pip" install -q --no-deps video2dataset==1.3.0 torchdata==0.7.1 decord
"$pip" install -q "${find_links[@]}" torch==2.13.0 "numpy<2" "pyarrow<17" "fire<0.6" "setuptools<81" webvtt-py fsspec \
    pandas tqdm requests yt-dlp webdataset ffmpeg-python imageio-ffmpeg wandb==0.15.12 langdetect einops timm \
    scenedetect "opencv-python-headless<4.11" "transformers==4.36.2" omegaconf
site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
mkdir -p "$site/torchaudio"
echo '"""Empty stand-in (see bench/video2dataset_venv.sh)."""' > "$site/torchaudio/__init__.py"
: > "$site/torchaudio/functional.py"
# video2dataset runs `ffmpeg` from PATH (the benchmark puts the venv's bin first)
ln -sf "$("$venv/bin/python" -c "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())")" "$venv/bin/ffmpeg"
"$venv/bin/python" -c "from video2dataset import video2dataset"
echo "video2dataset venv ready: $venv/bin/python"
