"""Run in the vLLM venv, where torchvision loads: transformers' real ``Qwen2VLVideoProcessor``
and the torch-only copy in tests/tiny_qwen.py on the same frames. Prints one JSON line per
case: the grids each gives and the largest difference of their ``pixel_values_videos``.

    .venv-vllm/bin/python -m tests.vllm.video_processor_check
"""

from __future__ import annotations

import json

# (frames, height, width): enlarged and shrunk frames, odd counts (temporal padding), a
# single frame, and the demo clips' shapes at max_side 448
CASES = [(4, 48, 64), (3, 144, 176), (8, 272, 640), (1, 30, 30), (5, 252, 448), (8, 190, 448)]


def compare(count: int, height: int, width: int, seed: int) -> dict:
    import numpy as np
    from transformers import Qwen2VLVideoProcessor
    from transformers.video_utils import VideoMetadata

    from tests.tiny_qwen import FRAME_PIXELS, TorchVideoProcessor

    real = Qwen2VLVideoProcessor(
        size=dict(FRAME_PIXELS), patch_size=14, merge_size=2, temporal_patch_size=2
    )
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]
    metadata = VideoMetadata(total_num_frames=count, fps=2.0, frames_indices=list(range(count)))
    outputs = [
        processor(
            videos=[frames], video_metadata=[metadata], do_sample_frames=False, return_tensors="pt"
        )
        for processor in (real, TorchVideoProcessor())
    ]
    a, b = (out["pixel_values_videos"] for out in outputs)
    return {
        "case": [count, height, width],
        "grids": [out["video_grid_thw"].tolist() for out in outputs],
        "shapes": [list(a.shape), list(b.shape)],
        "max_abs_diff": float((a - b).abs().max()) if a.shape == b.shape else None,
    }


if __name__ == "__main__":
    for seed, case in enumerate(CASES):
        print(json.dumps(compare(*case, seed=seed)))
