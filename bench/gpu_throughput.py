"""Device check of issue 27: Qwen2.5-VL-7B describing 30-frame clips on one GPU, with the
streaming runtime (pipelines/stream.py) beside the serial one, in one process.

Run it on the device machine, from the repository root (the device tool copies $OUT back):

    python3 bench/gpu_throughput.py --out "$OUT"

(give the call a timeout of about 540 s: the JSON is rewritten after every repeat, so a run
cut short still brings its figures back). CPU check of the whole path, with a 2-layer model
and 8 frames at 224 px answered in 32 tokens (this venv, about a minute on 2 cores):

    .venv/bin/python bench/gpu_throughput.py --tiny --device cpu

What runs:
- The model is Qwen2_5_VLForConditionalGeneration built from the published config.json of
  Qwen2.5-VL-7B-Instruct (inline below) with random weights, in bf16, initialised on the GPU
  (``from_config`` under ``torch.device("cuda")``): nothing is downloaded. The figures are
  the architecture's speed; the text is gibberish. It is the transformers path the
  ``transformers`` describer takes (model + generate), without the project's venv, which
  that machine lacks. flash_attention_2 is used if flash-attn is installed, else sdpa; on
  transformers <= 4.53 (non-flash) the vision tower runs clip by clip, see
  ``vision_tower_per_clip``.
- Inputs are built as Qwen2.5-VL's processor builds them, without a tokenizer: 30 frames
  sampled uniformly, resized to 448x448 (bicubic), normalised with the CLIP mean/std and cut
  into 14x14x2 patches in the processor's order (grid 15x32x32, 3840 video tokens after the
  2x2 merge), the video placeholders inside a chat-shaped prompt, ``second_per_grid_ts`` from
  the clip's real duration. 128 new tokens are forced (min = max, greedy).
- The CPU side is real: 16 distinct 1280x720 clips (4 s at 30 fps, MPEG-4 part 2) are
  written on the machine with cv2.VideoWriter, and every item is decoded from its file with
  cv2.VideoCapture (nothing big travels with the call).
- serial: the project's serial runtime, one stage over a chunk after the other: decode a
  chunk of ``batch`` clips (in one thread, as tasks.process_chunk does), then generate on it.
  streaming: ``run_stream`` with a decode stage of ``--decode-lanes`` threads and a vlm stage
  of one lane taking full batches, under a byte budget counted at the pixel values' size.
- GPU busy %: the mean of utilization samples (pynvml through torch.cuda.utilization, else
  ``nvidia-smi -lms 200``) over each run; the time generate() ran over wall time is reported
  beside it and stands in when neither sampler works.
- Time: ``--budget-s`` seconds are spread over the measured runs, sized from the warm-up;
  the whole script stays under ``--deadline-s`` (default 450 s, under the device's 8 minutes).

Goal: streaming >= 4,000 clips/h with the GPU busy >= 80% (anchor: ~780 clips/h at ~20% on an
A100, vLLM issue 21873). ``ratio`` = the worse of 4000 / clips_per_h and 80 / busy (<= 1 passes).
Without a CUDA device (``make bench`` here) it prints "skipped" and exits 0, writing nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.stream import StreamOptions, run_stream  # noqa: E402 - stdlib only, see above

# Qwen/Qwen2.5-VL-7B-Instruct config.json as published (flat hub layout, which every
# transformers version with Qwen2.5-VL reads; v5 splits it into text_config/vision_config).
QWEN25_VL_7B = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "model_type": "qwen2_5_vl",
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "vision_token_id": 151654,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "initializer_range": 0.02,
    "intermediate_size": 18944,
    "max_position_embeddings": 128000,
    "max_window_layers": 28,
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "sliding_window": 32768,
    "tie_word_embeddings": False,
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 152064,
    "vision_config": {
        "depth": 32,
        "hidden_act": "silu",
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "in_chans": 3,
        "out_hidden_size": 3584,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "spatial_patch_size": 14,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
        "temporal_patch_size": 2,
    },
}
# --tiny: the same architecture, small enough for a CPU (vocabulary and token ids kept, so
# the prompt layout is the real one; head_dim 32 -> mrope sections sum to 16).
TINY_TEXT = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "max_window_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rope_scaling": {"type": "mrope", "mrope_section": [4, 6, 6]},
}
TINY_VISION = {
    "depth": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_heads": 4,
    "out_hidden_size": 128,
    "fullatt_block_indexes": [1],
}

IM_START, IM_END, NEWLINE = 151644, 151645, 198
PAD_TOKEN = 151643
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OPENAI_CLIP_MEAN / STD, the processor's
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
GOAL_CLIPS_PER_H, GOAL_BUSY_PCT = 4000.0, 80.0
SAMPLE_S = 0.2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--tiny", action="store_true", help="tiny config, small clips: a CPU check of the path")
    add("--device", choices=["auto", "cuda", "cpu"], default="auto")
    add(
        "--out",
        default=None,
        help="folder for gpu_throughput.json (default: $OUT, else bench/results; --tiny: none)",
    )
    add("--budget-s", type=float, default=None, help="seconds for the measured runs")
    add("--deadline-s", type=float, default=450.0, help="the whole script, init included")
    add("--repeats", type=int, default=3, help="runs of each runtime (medians); fewer if slow")
    add("--batches-per-run", type=int, default=0, help="0: as many as the budget allows")
    add("--batch", type=int, default=0, help="clips per generate; 0: what fits, up to --max-batch")
    add("--max-batch", type=int, default=None, help="cap of the memory-sized batch")
    add("--decode-lanes", type=int, default=None, help="decode threads of the streaming run")
    add("--serial-decode-lanes", type=int, default=1, help="decode threads of the serial run")
    add("--prefetch-mb", type=float, default=0.0, help="byte budget; 0: 2 batches + lanes")
    add("--frames", type=int, default=None, help="frames per clip (30; tiny: 8)")
    add("--size", type=int, default=None, help="frames are resized to size x size (448; 224)")
    add("--new-tokens", type=int, default=None, help="tokens generated per clip (128; 32)")
    add("--prompt-tokens", type=int, default=48, help="text tokens of the user prompt")
    add("--attn", default="auto", help="attn_implementation; auto: flash_attention_2 if installed")
    args = parser.parse_args(argv)
    # --tiny keeps the path and shrinks the work: the clips, the model and the answers
    tiny_defaults = {"budget_s": 30.0, "max_batch": 2, "decode_lanes": 2}
    tiny_defaults.update(frames=8, size=224, new_tokens=32)
    full_defaults = {"budget_s": 240.0, "max_batch": 32, "decode_lanes": 8}
    full_defaults.update(frames=30, size=448, new_tokens=128)
    for key, value in (tiny_defaults if args.tiny else full_defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


# -- clips: written with cv2.VideoWriter, decoded with cv2.VideoCapture ------------------------
def write_clip(path: Path, width: int, height: int, seconds: float, fps: int, seed: int) -> str:
    """A clip with moving content (scrolling gradient, a moving box, the frame number), so
    the decoder does the work of real footage; returns the codec used."""
    import cv2
    import numpy as np

    for fourcc, suffix in (("mp4v", ".mp4"), ("MJPG", ".avi")):
        target = path.with_suffix(suffix)
        writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
        if writer.isOpened():
            break
    else:
        raise RuntimeError("cv2.VideoWriter opens neither mp4v nor MJPG")
    rng = np.random.default_rng(seed)
    tint = rng.integers(0, 255, 3).astype(np.uint8)
    x, y = np.meshgrid(np.linspace(0, 255, 2 * width), np.linspace(0, 255, height))
    base = np.stack([(x + y) % 256, (2 * x) % 256, (y * 3) % 256], axis=-1).astype(np.uint8)
    for index in range(int(seconds * fps)):
        shift = (index * 7) % width
        frame = np.ascontiguousarray(base[:, shift : shift + width] ^ tint)
        left = (index * 11) % max(1, width - height // 3)
        box = (left, height // 3), (left + height // 3, 2 * height // 3)
        cv2.rectangle(frame, *box, (255, 255, 255), -1)
        cv2.putText(frame, f"{seed}:{index}", (20, 60), cv2.FONT_HERSHEY_SIMPLEX, 2, (0, 0, 0), 4)
        writer.write(frame)
    writer.release()
    return fourcc


def write_clips(folder: Path, count: int, width: int, height: int, seconds: float, fps: int):
    """``count`` distinct clips in ``folder`` (threads: the encoder releases the GIL)."""
    paths = [folder / f"clip{i:02d}" for i in range(count)]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        jobs = [
            pool.submit(write_clip, p, width, height, seconds, fps, i) for i, p in enumerate(paths)
        ]
        codecs = {job.result() for job in jobs}
    return sorted(str(p) for p in folder.iterdir()), codecs.pop()


def sample_indices(total: int, frames: int) -> list[int]:
    """Uniform frame indices, as Qwen2VLVideoProcessor.sample_frames picks them."""
    step = total / frames
    return [int(i * step) for i in range(frames)]


def decode_clip(path: str, frames: int, size: int):
    """(frames as uint8 RGB T x size x size x 3, duration in seconds) of one video file."""
    import cv2
    import numpy as np

    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise RuntimeError(f"cv2 cannot open {path}")
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    wanted = Counter(sample_indices(total, frames))
    picked = []
    for index in range(total):
        if not capture.grab():  # decode; colour conversion only for the frames we keep
            break
        if index in wanted:
            ok, frame = capture.retrieve()
            if not ok:
                break
            small = cv2.resize(frame, (size, size), interpolation=cv2.INTER_CUBIC)
            picked += [cv2.cvtColor(small, cv2.COLOR_BGR2RGB)] * wanted[index]
        if len(picked) >= frames:
            break
    capture.release()
    if not picked:
        raise RuntimeError(f"no frame decoded from {path}")
    picked += [picked[-1]] * (frames - len(picked))  # a short read: repeat the last frame
    return np.stack(picked[:frames]), total / fps


def patchify(frames, patch: int, temporal: int, merge: int):
    """Pixel values (patches x C*temporal*patch*patch, float32) and the (t, h, w) grid, in
    Qwen2VLVideoProcessor's layout: rescale, CLIP-normalise, then patches ordered by merge
    window so the vision tower's 2x2 merger sees neighbours."""
    import numpy as np

    if pad := -len(frames) % temporal:
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)])
    t, h, w, c = frames.shape
    x = frames.astype(np.float32) * np.float32(1 / 255)
    x -= np.asarray(CLIP_MEAN, np.float32)
    x /= np.asarray(CLIP_STD, np.float32)
    gt, gh, gw = t // temporal, h // patch, w // patch
    x = x.reshape(gt, temporal, gh // merge, merge, patch, gw // merge, merge, patch, c)
    # to (gt, gh/m, gw/m, m, m, C, temporal, patch, patch): the processor's permute from (T,C,H,W)
    x = x.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7)
    return np.ascontiguousarray(x).reshape(gt * gh * gw, c * temporal * patch * patch), (gt, gh, gw)


# -- the two stages (duck-typed for pipelines/stream.py) --------------------------------------
class DecodeStage:
    """CPU: decode, sample, resize and patchify one clip per call; several lanes."""

    name = "decode"
    batch_size = 1

    def __init__(self, frames: int, size: int, vision: dict, lanes: int):
        self.frames, self.size, self.vision, self.lanes = frames, size, vision, lanes

    def process_batch(self, items: list[dict]) -> list[dict]:
        for item in items:
            started = time.perf_counter()
            frames, duration = decode_clip(item["path"], self.frames, self.size)
            v = self.vision
            pixels, grid = patchify(
                frames, v["patch_size"], v["temporal_patch_size"], v["spatial_merge_size"]
            )
            # seconds per temporal patch, as the Qwen2.5-VL processor sets second_per_grid_ts
            item.update(pixel_values=pixels, grid=grid, second_per_grid=duration * 2 / self.frames)
            item["decode_s"] = time.perf_counter() - started
        return items


class VlmStage:
    """GPU: one generate() over a batch of decoded clips; one lane."""

    name = "vlm"

    def __init__(self, model, batch_size: int, prompt: list[int], new_tokens: int, video_token):
        import inspect

        self.model, self.batch_size, self.prompt = model, batch_size, prompt
        self.video_token, self.new_tokens = video_token, new_tokens
        self.device = next(model.parameters()).device
        self.typed_tokens = "mm_token_type_ids" in inspect.signature(model.forward).parameters
        self.busy_s, self.tokens, self.batches = 0.0, 0, 0

    def inputs(self, items: list[dict]) -> dict:
        import torch

        ids = torch.tensor([self.prompt] * len(items), device=self.device)
        rows = sum(len(item["pixel_values"]) for item in items)
        pixels = torch.empty((rows, items[0]["pixel_values"].shape[1]), device=self.device)
        at = 0
        for item in items:
            block = torch.from_numpy(item["pixel_values"])
            pixels[at : at + len(block)].copy_(block)
            at += len(block)
        inputs = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "pixel_values_videos": pixels,
            "video_grid_thw": torch.tensor([item["grid"] for item in items], device=self.device),
            "second_per_grid_ts": torch.tensor(
                [item["second_per_grid"] for item in items], device=self.device
            ),
        }
        if self.typed_tokens:  # transformers 5: 0 text, 2 video (what the processor returns)
            inputs["mm_token_type_ids"] = (ids == self.video_token).int() * 2
        return inputs

    def process_batch(self, items: list[dict]) -> list[dict]:
        import torch

        started = time.perf_counter()
        inputs = self.inputs(items)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=self.new_tokens,
                min_new_tokens=self.new_tokens,
                do_sample=False,
                pad_token_id=PAD_TOKEN,
            )
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        new = output.shape[1] - inputs["input_ids"].shape[1]
        self.busy_s += time.perf_counter() - started
        self.tokens += new * len(items)
        self.batches += 1
        for item in items:
            item["new_tokens"] = new
        return items


def prompt_ids(video_tokens: int, text_tokens: int, config: dict) -> list[int]:
    """Token ids in the chat template's shape: system turn, user turn with the video
    placeholders and the prompt text, then the assistant's turn (text ids are arbitrary)."""
    text = [1000 + (7919 * i) % 140000 for i in range(text_tokens)]  # stand-ins for words
    system = [IM_START, 8948, NEWLINE, 2610, 525, 264, 10950, 17847, 13, IM_END, NEWLINE]
    video = [config["vision_start_token_id"]]
    video += [config["video_token_id"]] * video_tokens + [config["vision_end_token_id"]]
    user = [IM_START, 872, NEWLINE, *video, *text, IM_END, NEWLINE]
    return system + user + [IM_START, 77091, NEWLINE]


# -- the model -------------------------------------------------------------------------------
def config_dict(tiny: bool) -> dict:
    config = json.loads(json.dumps(QWEN25_VL_7B))
    if tiny:
        config.update(TINY_TEXT)
        config["vision_config"].update(TINY_VISION)
    return config


def pick_attention(requested: str, device: str) -> str:
    import importlib.util

    if requested != "auto":
        return requested
    flash = device == "cuda" and importlib.util.find_spec("flash_attn") is not None
    return "flash_attention_2" if flash else "sdpa"


def build_model(config: dict, device: str, attn: str):
    """Random-weight Qwen2.5-VL from ``config``, initialised directly on ``device``."""
    import torch
    import transformers
    from packaging.version import Version
    from transformers import AutoModelForImageTextToText, Qwen2_5_VLConfig

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    old = Version(transformers.__version__) < Version("4.56")
    dtype_arg = {"torch_dtype" if old else "dtype": dtype}
    hf_config = Qwen2_5_VLConfig.from_dict(config)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(
            hf_config, attn_implementation=attn, **dtype_arg
        )
    return model.eval()


def vision_tower_per_clip(model, attn: str) -> bool:
    """Run the vision tower clip by clip where transformers would build its attention mask
    over every patch of the batch (non-flash attention up to 4.53 at least: (B x 15360)^2
    elements, 483 GB at B=32, and dense attention across clips). Attention never crosses
    clips (cu_seqlens blocks), so the result is the same. True when patched."""
    import inspect

    import torch

    if "flash" in attn:
        return False
    tower = next(
        m for m in model.modules() if type(m).__name__.endswith("VisionTransformerPretrainedModel")
    )
    source = inspect.getsource(type(tower)) + inspect.getsource(type(tower.blocks[0].attn))
    if "seq_length, seq_length" not in source:  # newer versions split by cu_seqlens
        return False
    whole_batch = tower.forward

    def per_clip(hidden_states, grid_thw, **kwargs):
        sizes = grid_thw.prod(-1).tolist()
        parts = hidden_states.split(sizes)
        return torch.cat(
            [
                whole_batch(part, grid_thw=grid_thw[i : i + 1], **kwargs)
                for i, part in enumerate(parts)
            ]
        )

    tower.forward = per_clip
    return True


# -- GPU busy --------------------------------------------------------------------------------
class BusySampler:
    """GPU utilization (% of time a kernel ran), sampled every SAMPLE_S in the background."""

    def __init__(self, device_index: int):
        self.index, self.samples, self.source = device_index, [], None
        self.stopped = threading.Event()
        self.process: subprocess.Popen | None = None

    def start(self) -> BusySampler:
        import torch

        try:
            torch.cuda.utilization(self.index)
            self.source, target = "pynvml", self._poll
        except Exception:  # noqa: BLE001 - no pynvml/amdsmi: try the CLI next
            target = self._nvidia_smi
        threading.Thread(target=target, daemon=True, name="busy-sampler").start()
        return self

    def _poll(self) -> None:
        import torch

        while not self.stopped.wait(SAMPLE_S):
            self.samples.append((time.monotonic(), float(torch.cuda.utilization(self.index))))

    def _nvidia_smi(self) -> None:
        command = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        command += ["-lms", str(int(SAMPLE_S * 1000)), "-i", str(self.index)]
        try:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        except OSError:
            return
        for line in self.process.stdout:
            if self.stopped.is_set():
                break
            try:
                self.samples.append((time.monotonic(), float(line.strip())))
                self.source = "nvidia-smi"
            except ValueError:  # "[N/A]" (MIG) or a header
                continue

    def mean(self, start: float, end: float) -> float | None:
        window = [pct for at, pct in list(self.samples) if start <= at <= end]
        return round(statistics.fmean(window), 1) if window else None

    def stop(self) -> None:
        self.stopped.set()
        if self.process is not None:
            self.process.terminate()


# -- the runs --------------------------------------------------------------------------------
def clip_items(paths: list[str], count: int, start: int = 0) -> list[dict]:
    """``count`` fresh items cycling over the written clips."""
    return [{"clip_id": start + i, "path": paths[(start + i) % len(paths)]} for i in range(count)]


def run_serial(items, decode: DecodeStage, vlm: VlmStage, lanes: int) -> dict:
    """Decode a chunk of one batch, then generate on it; chunk after chunk."""
    started, decode_s = time.perf_counter(), 0.0
    with ThreadPoolExecutor(max_workers=lanes) as pool:
        for at in range(0, len(items), vlm.batch_size):
            chunk_started = time.perf_counter()
            chunk = items[at : at + vlm.batch_size]
            list(pool.map(lambda item: decode.process_batch([item]), chunk))
            decode_s += time.perf_counter() - chunk_started
            vlm.process_batch(chunk)
            for item in chunk:
                item.pop("pixel_values", None)
    return {"wall_s": time.perf_counter() - started, "decode_wall_s": round(decode_s, 2)}


def run_streaming(items, decode: DecodeStage, vlm: VlmStage, budget: int, wait_s: float) -> dict:
    options = StreamOptions(
        max_wait_s=wait_s,
        budget_bytes=budget,
        held_bytes=lambda item: item["pixel_values"].nbytes,
        release=lambda item: item.pop("pixel_values", None),
    )
    done: list[dict] = []
    report = run_stream(items, [decode, vlm], done.append, options)
    if len(done) != len(items):
        raise RuntimeError(f"streaming finished {len(done)} of {len(items)} clips")
    stats = report.as_dict()
    return {
        "wall_s": report.wall_s,
        "peak_held_mb": stats["peak_held_mb"],
        "vlm_mean_batch": stats["stages"]["vlm"]["mean_batch"],
    }


def measured(kind: str, run, items, vlm: VlmStage, sampler: BusySampler | None) -> dict:
    """One run of ``kind`` with its figures: clips/h, tokens/s, GPU busy."""
    vlm.busy_s, vlm.tokens, vlm.batches = 0.0, 0, 0
    start = time.monotonic()
    figures = run(items)
    end = time.monotonic()
    wall = figures.pop("wall_s")
    generate_pct = round(100 * vlm.busy_s / wall, 1)
    sampled = sampler.mean(start, end) if sampler else None
    busy = sampled if sampled is not None else (generate_pct if sampler else None)
    result = {
        "clips": len(items),
        "wall_s": round(wall, 2),
        "clips_per_h": round(len(items) / wall * 3600, 1),
        "output_tokens_per_s": round(vlm.tokens / wall, 1),
        "gpu_busy_pct": busy,
        "generate_busy_pct": generate_pct,
        "generate_s_per_batch": round(vlm.busy_s / max(1, vlm.batches), 2),
        "decode_s_per_clip": round(statistics.fmean(i["decode_s"] for i in items), 3),
        **figures,
    }
    print(f"  {kind}: {json.dumps(result)}", flush=True)
    return result


def spread(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(runs: list[dict]) -> dict:
    keys = ["clips_per_h", "output_tokens_per_s", "gpu_busy_pct", "generate_busy_pct", "wall_s"]
    summary = {key: spread([run[key] for run in runs]) for key in keys}
    return {**summary, "runs": runs}


# -- sizing ----------------------------------------------------------------------------------
def bytes_per_clip(config: dict, seq_len: int, patches: int) -> int:
    """GPU bytes one clip adds to a batch: its KV cache plus the larger of the prefill's and
    the vision tower's transient activations (bf16), plus its pixel values (fp32 + bf16)."""
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config["hidden_size"] // heads
    kv_cache = 2 * config["num_hidden_layers"] * kv * head_dim * 2 * seq_len
    prefill = seq_len * (3 * config["intermediate_size"] + 4 * config["hidden_size"]) * 2
    v = config["vision_config"]
    vision = patches * (3 * v["intermediate_size"] + 6 * v["hidden_size"]) * 2
    pixels = patches * 3 * v["temporal_patch_size"] * v["patch_size"] ** 2 * 6
    return kv_cache + max(prefill, vision) + pixels


def fitting_batch(config: dict, seq_len: int, patches: int, cap: int) -> tuple[int, int]:
    """(batch used, batch that fits in 60% of the free GPU memory)."""
    import torch

    free, _ = torch.cuda.mem_get_info()
    fits = max(1, int(0.6 * free // bytes_per_clip(config, seq_len, patches)))
    return min(cap, fits), fits


def plan(args, batch: int, generate_s: float, decode_s: float) -> tuple[int, int]:
    """(repeats, batches per run) that fit ``--budget-s``: as many repeats as asked (for
    medians), then as many batches per run as fit, at least 2 so the overlap shows."""

    def cost(batches: int) -> float:
        fill = decode_s * batch / args.decode_lanes
        stream = fill + batches * max(generate_s, fill)
        serial = batches * (decode_s * batch / args.serial_decode_lanes + generate_s)
        return stream + serial

    if args.batches_per_run:
        return args.repeats, args.batches_per_run
    for repeats in range(args.repeats, 0, -1):
        fitting = [n for n in range(2, 9) if repeats * cost(n) <= args.budget_s]
        if fitting:
            return repeats, max(fitting)
    return 1, 1  # slower than planned for: one batch each, the deadline still holds


def is_out_of_memory(exc: BaseException) -> bool:
    return "out of memory" in str(exc).lower()


def warm_up(args, model, decode: DecodeStage, paths, prompt, config, device) -> tuple:
    """Decode one batch and generate on it (first calls pay lazy init); on CUDA the batch
    also probes memory and is halved until it fits. Returns (vlm stage, figures)."""
    import torch

    items = clip_items(paths, args.batch)
    with ThreadPoolExecutor(max_workers=args.decode_lanes) as pool:
        list(pool.map(lambda item: decode.process_batch([item]), items))
    vlm = VlmStage(model, 1, prompt, 4, config["video_token_id"])
    vlm.process_batch(items[:1])  # kernels, cuBLAS handles, allocator
    batch = args.batch
    while True:
        vlm = VlmStage(model, batch, prompt, args.new_tokens, config["video_token_id"])
        try:
            vlm.process_batch(items[:batch])
            break
        except Exception as exc:  # noqa: BLE001 - only out of memory is handled
            if not is_out_of_memory(exc) or batch == 1:
                raise
        torch.cuda.empty_cache()  # out of the handler: the traceback no longer pins tensors
        batch //= 2
        print(f"  warm-up: out of memory, batch {batch * 2} -> {batch}", flush=True)
    figures = {
        "generate_s": round(vlm.busy_s, 2),
        "decode_s_per_clip": round(statistics.fmean(i["decode_s"] for i in items), 3),
    }
    figures["vision_s"] = vision_seconds(model, vlm, items[:batch], device)
    if device == "cuda":
        figures["peak_gpu_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    return vlm, figures


def vision_seconds(model, vlm: VlmStage, items: list[dict], device: str) -> float | None:
    """Seconds of the vision tower alone on the batch: how much of generate() it takes."""
    import torch

    if not hasattr(model, "get_video_features"):
        return None
    inputs = vlm.inputs(items)
    started = time.perf_counter()
    with torch.inference_mode():
        model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
    if device == "cuda":
        torch.cuda.synchronize()
    return round(time.perf_counter() - started, 2)


def pick_device(requested: str, tiny: bool) -> str | None:
    """The device to run on; None means skip (no CUDA for the full model)."""
    import torch

    cuda = torch.cuda.is_available()
    if requested == "cuda" and not cuda:
        return None
    if requested == "cpu" and not tiny:
        print("gpu_throughput: the 7B model runs on CUDA only; use --tiny for a CPU check")
        sys.exit(2)
    if requested == "auto":
        return "cuda" if cuda else ("cpu" if tiny else None)
    return requested


def verdict(streaming: dict) -> dict:
    """The goal's ratio (<= 1 passes): the worse of clips/h and GPU busy against the goal."""
    clips = streaming["clips_per_h"]["median"]
    busy = streaming["gpu_busy_pct"]["median"]
    ratio = max(GOAL_CLIPS_PER_H / clips, GOAL_BUSY_PCT / busy) if clips and busy else None
    return {
        "goal": "streaming >= 4000 clips/h with the GPU busy >= 80% "
        "(anchor: ~780 clips/h at ~20% on an A100, vLLM issue 21873)",
        "ratio": None if ratio is None else round(ratio, 3),
        "headline": [
            "streaming.clips_per_h.median",
            "streaming.gpu_busy_pct.median",
            "serial.clips_per_h.median",
            "serial.gpu_busy_pct.median",
            "streaming_vs_serial",
        ],
    }


def report(result: dict, runs: dict[str, list[dict]], out: str | None, began: float) -> str:
    """Medians into ``result``, written to ``out``/gpu_throughput.json after every repeat,
    so a run cut short by the device's limit still brings its figures back."""
    streaming, serial = summarise(runs["streaming"]), summarise(runs["serial"])
    result["streaming"], result["serial"] = streaming, serial
    if streaming["clips_per_h"]["median"] and serial["clips_per_h"]["median"]:
        speedup = streaming["clips_per_h"]["median"] / serial["clips_per_h"]["median"]
        result["streaming_vs_serial"] = round(speedup, 2)
        if not result["tiny"]:
            result.update(verdict(streaming))
    result["wall_s"] = round(time.monotonic() - began, 1)
    text = json.dumps(result, indent=2)
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "gpu_throughput.json").write_text(text + "\n")
    return text


def clip_shape(args) -> dict:
    """The source clips written for the run: HD for the device, small for --tiny."""
    if args.tiny:
        return {"count": 4, "width": 640, "height": 360, "seconds": 3.0, "fps": 20}
    return {"count": 16, "width": 1280, "height": 720, "seconds": 4.0, "fps": 30}


def model_info(model, attn: str, tiny: bool, init_s: float) -> dict:
    params = sum(p.numel() for p in model.parameters())
    return {
        "architecture": type(model).__name__,
        "config": "Qwen2.5-VL-7B-Instruct config.json" + (" (tiny)" if tiny else ""),
        "weights": "random (from_config)",
        "params_b": round(params / 1e9, 3),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "attn_implementation": attn,
        "init_s": round(init_s, 1),
        "vision_tower_per_clip": vision_tower_per_clip(model, attn),
    }


def say(label: str, value) -> None:
    print(f"gpu_throughput: {label} {json.dumps(value)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    began = time.monotonic()
    args = parse_args(argv)
    try:
        import cv2
        import torch
        import transformers
    except ImportError as exc:
        print(f"gpu_throughput: skipped: {exc}")
        return 0
    device = pick_device(args.device, args.tiny)
    if device is None:
        print("gpu_throughput: skipped: no CUDA device (try --tiny --device cpu)")
        return 0
    transformers.logging.set_verbosity_error()
    cv2.setNumThreads(1)  # the lanes are the parallelism; no pool inside each call
    if device == "cpu":  # OpenMP threads contend with the decode lanes (5x slower on 2 cores)
        torch.set_num_threads(1)
    out = args.out or os.environ.get("OUT") or (None if args.tiny else str(ROOT / "bench/results"))
    config = config_dict(args.tiny)
    vision = config["vision_config"]
    patch = vision["patch_size"]
    grid = (args.frames // vision["temporal_patch_size"], args.size // patch, args.size // patch)
    patches = grid[0] * grid[1] * grid[2]
    video_tokens = patches // vision["spatial_merge_size"] ** 2
    prompt = prompt_ids(video_tokens, args.prompt_tokens, config)
    result = {
        "benchmark": "gpu_throughput",
        "tiny": args.tiny,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "cpus": os.cpu_count(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }

    with tempfile.TemporaryDirectory(prefix="gpu_throughput_") as folder:
        started, shape = time.monotonic(), clip_shape(args)
        dims = [shape[key] for key in ("count", "width", "height", "seconds", "fps")]
        paths, shape["codec"] = write_clips(Path(folder), *dims)
        result["source_clips"] = {**shape, "written_s": round(time.monotonic() - started, 1)}
        say("clips", result["source_clips"])

        started, attn = time.monotonic(), pick_attention(args.attn, device)
        model = build_model(config, device, attn)
        if device == "cuda":
            torch.cuda.synchronize()
        result["model"] = model_info(model, attn, args.tiny, time.monotonic() - started)
        say("model", result["model"])

        fits = None
        if not args.batch and device == "cuda":
            seq_len = len(prompt) + args.new_tokens
            args.batch, fits = fitting_batch(config, seq_len, patches, args.max_batch)
        args.batch = args.batch or args.max_batch
        decode = DecodeStage(args.frames, args.size, vision, args.decode_lanes)
        vlm, warm = warm_up(args, model, decode, paths, prompt, config, device)
        args.batch = vlm.batch_size
        result["warmup"] = warm
        say("warm-up", warm)

        repeats, batches = plan(args, args.batch, warm["generate_s"], warm["decode_s_per_clip"])
        clip_bytes = patches * 3 * vision["temporal_patch_size"] * patch**2 * 4  # float32
        budget = int(args.prefetch_mb * 2**20) or (2 * args.batch + args.decode_lanes) * clip_bytes
        fill_s = warm["decode_s_per_clip"] * args.batch / args.decode_lanes
        wait_s = max(0.05, 1.5 * fill_s)  # the first batch fills at the decode rate
        result["shape"] = {
            "frames": args.frames,
            "size": args.size,
            "grid_thw": list(grid),
            "video_tokens": video_tokens,
            "prompt_tokens": len(prompt),
            "new_tokens": args.new_tokens,
            "batch": args.batch,
            "batch_fits": fits,
            "decode_lanes": args.decode_lanes,
            "serial_decode_lanes": args.serial_decode_lanes,
            "budget_mb": round(budget / 2**20),
            "max_wait_s": round(wait_s, 2),
        }
        result["plan"] = {"repeats": repeats, "clips_per_run": batches * args.batch}
        say("shape", result["shape"])

        sampler = BusySampler(torch.cuda.current_device()).start() if device == "cuda" else None
        runtimes = {
            "streaming": lambda its: run_streaming(its, decode, vlm, budget, wait_s),
            "serial": lambda its: run_serial(its, decode, vlm, args.serial_decode_lanes),
        }
        runs: dict[str, list[dict]] = {"streaming": [], "serial": []}
        count, next_clip, per_repeat = batches * args.batch, 0, 0.0
        for repeat in range(repeats):
            if time.monotonic() - began + per_repeat > args.deadline_s:
                result["plan"]["stopped_early"] = f"after {repeat} repeats (deadline)"
                break
            repeat_started = time.monotonic()
            for kind, runtime in runtimes.items():  # interleaved, so drift hits both alike
                items = clip_items(paths, count, next_clip)
                next_clip += count
                runs[kind].append(measured(kind, runtime, items, vlm, sampler))
            per_repeat = time.monotonic() - repeat_started
            if sampler:
                result["gpu_busy_source"] = sampler.source or "generate-timing"
            report(result, runs, out, began)
        if sampler:
            sampler.stop()
    result.setdefault("gpu_busy_source", "none (cpu)")
    text = report(result, runs, out, began)
    print(text)
    streaming, serial = result["streaming"], result["serial"]
    print(
        f"gpu_throughput: streaming {streaming['clips_per_h']['median']} clips/h, "
        f"GPU busy {streaming['gpu_busy_pct']['median']}% | serial "
        f"{serial['clips_per_h']['median']} clips/h, {serial['gpu_busy_pct']['median']}% "
        f"| goal >= {GOAL_CLIPS_PER_H:.0f} clips/h at >= {GOAL_BUSY_PCT:.0f}% busy"
        + (f" | written to {out}/gpu_throughput.json" if out else ""),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
