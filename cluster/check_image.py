"""Check a built image on a GPU node before a cluster runs it: what `docker build` cannot see.

    docker run --rm --gpus all --cap-add SYS_ADMIN visual-erm-rl:0.1.0 python cluster/check_image.py
    kubectl run check-image --rm -it --restart=Never --image=$REGISTRY/visual-erm-rl:0.1.0 \
        --overrides='{"spec":{"containers":[{"name":"c","image":"'$REGISTRY'/visual-erm-rl:0.1.0",
        "command":["python","cluster/check_image.py"],"resources":{"limits":{"nvidia.com/gpu":1}}}]}}'

Each check is a row of one table (a failed check does not stop the others; exit 1 when any failed):
  imports      ray, vllm, verl, flash_attn, deepspeed, xgrammar, triton, playwright, landlock, pyseccomp import,
               and flash-attn was compiled for the CUDA major torch runs on (a 12.x build under cu13 torch fails
               at its first call, not at import);
  triton       Triton JIT-compiles and runs a kernel (it builds its driver stub with the system C compiler);
  flash-attn   flash_attn_func agrees with torch's SDPA on a small batch;
  render       the sandbox renders a chart (matplotlib), a table (Chromium) and an SVG (cairosvg);
  vllm         vLLM builds an engine for a tiny Qwen3-VL built offline and samples from an image prompt;
  gpu-smoke    benchmarks/gpu_smoke.py: HF rollout and critic on the GPU, verl FSDP2 GRPO updates, and a
               DeepSpeed ZeRO-2 critic-SFT run (its optimizer initialised without a JIT build).

    python cluster/check_image.py --checks render    # one check (the render check also runs on a CPU machine)
"""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODULES = ("ray", "vllm", "verl", "flash_attn", "deepspeed", "xgrammar", "triton", "playwright", "landlock",
           "pyseccomp", "cairosvg", "transformers", "torch")


def check_imports() -> str:
    versions = {}
    for name in MODULES:
        module = importlib.import_module(name)
        versions[name] = getattr(module, "__version__", "?")
    import torch

    built = _flash_attn_cuda()
    if built is not None and torch.version.cuda and built.split(".")[0] != torch.version.cuda.split(".")[0]:
        raise RuntimeError(f"flash-attn was built for CUDA {built}, torch runs on CUDA {torch.version.cuda}")
    return ", ".join(f"{k} {v}" for k, v in versions.items()) + f"; torch CUDA {torch.version.cuda}"


def _flash_attn_cuda() -> str | None:
    """The CUDA version flash-attn's extension links against (from its shared library's cudart dependency)."""
    import flash_attn_2_cuda  # the compiled extension: an ABI or CUDA mismatch fails here

    out = subprocess.run(["ldd", flash_attn_2_cuda.__file__], capture_output=True, text=True, timeout=30).stdout
    found = re.search(r"libcudart\.so\.(\d+)", out)
    return found.group(1) if found else None


def check_triton() -> str:
    import torch
    import triton
    import triton.language as tl

    @triton.jit
    def add(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < n
        tl.store(out_ptr + offsets, tl.load(x_ptr + offsets, mask=mask) + tl.load(y_ptr + offsets, mask=mask),
                 mask=mask)

    x, y = torch.rand(4099, device="cuda"), torch.rand(4099, device="cuda")
    out = torch.empty_like(x)
    add[(triton.cdiv(4099, 1024),)](x, y, out, 4099, BLOCK=1024)
    torch.testing.assert_close(out, x + y)
    return f"vector add compiled and ran (triton {triton.__version__})"


def check_flash_attn() -> str:
    import torch
    import torch.nn.functional as F
    from flash_attn import flash_attn_func

    q, k, v = (torch.randn(2, 128, 4, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    out = flash_attn_func(q, k, v, causal=True)
    ref = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         is_causal=True).transpose(1, 2)
    torch.testing.assert_close(out, ref, atol=2e-2, rtol=2e-2)
    return "flash_attn_func matches SDPA (bf16, causal)"


def check_render() -> str:
    from pipeline.render import close_all, render

    programs = {
        "chart": "import matplotlib.pyplot as plt\nplt.bar(['a', 'b'], [1, 2])\nplt.title('check')\n",
        "table": "| a | b |\n|---|---|\n| 1 | 2 |\n",
        "svg": '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="32" height="32" '
               'fill="red"/></svg>',
    }
    done = []
    try:
        for kind, code in programs.items():
            result = render(kind, code)
            if not result.ok:
                raise RuntimeError(f"{kind}: {result.failure} {result.detail}")
            done.append(f"{kind} {result.image.shape[1]}x{result.image.shape[0]}")
    finally:
        close_all()
    return "rendered " + ", ".join(done)


def check_vllm() -> str:
    import numpy as np

    from pipeline.data.loader import policy_messages
    from pipeline.models.config import ModelConfig, ModelsConfig, TinyModelConfig
    from pipeline.rollout.config import SamplingConfig, VLLMRolloutConfig
    from pipeline.rollout.vllm import VLLMRollout
    from pipeline.sample import Sample
    from pipeline.tiny.corpus import code_corpus
    from pipeline.tiny.model import build_tiny_qwen3_vl

    with tempfile.TemporaryDirectory(prefix="check-image-") as tmp:
        corpus = list(code_corpus(n=150))
        build_tiny_qwen3_vl(TinyModelConfig(), Path(tmp) / "policy", corpus=lambda: corpus)
        models = ModelsConfig(policy=ModelConfig(path=str(Path(tmp) / "policy")))
        engine = VLLMRolloutConfig(gpu_memory_utilization=0.3, max_model_len=2048, max_num_seqs=8,
                                   enforce_eager=False)
        t0 = time.perf_counter()
        rollout = VLLMRollout(models, SamplingConfig(n=2, max_new_tokens=16, temperature=1.0), engine, seed=0)
        build_s = time.perf_counter() - t0
        image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
        out = rollout.generate([Sample(task="chart", reference_image=image, prompt_id="check",
                                       messages=policy_messages("chart"))])
        if len(out) != 2 or not all(s.response_ids for s in out):
            raise RuntimeError(f"expected 2 sampled answers, got {[len(s.response_ids) for s in out]}")
    return f"engine built in {build_s:.0f} s (CUDA graphs on), sampled 2 answers of {len(out[0].response_ids)} tokens"


def check_gpu_smoke() -> str:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import gpu_smoke

    if gpu_smoke.main(["--device", "cuda"]) != 0:
        raise RuntimeError("a step failed: see the gpu_smoke table above")
    return "HF rollout + critic, verl FSDP2 GRPO, DeepSpeed ZeRO-2 SFT ran on the GPU (table above)"


CHECKS = {"imports": check_imports, "triton": check_triton, "flash-attn": check_flash_attn,
          "render": check_render, "vllm": check_vllm, "gpu-smoke": check_gpu_smoke}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated subset of {', '.join(CHECKS)}")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.checks.split(",") if n.strip()]
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        ap.error(f"unknown check(s) {unknown}; known: {', '.join(CHECKS)}")
    rows = []
    for name in names:
        t0 = time.perf_counter()
        try:
            ok, detail = True, CHECKS[name]()
        except Exception as e:  # noqa: BLE001 - a failed check is a row; the others still run
            traceback.print_exc()
            ok, detail = False, f"{type(e).__name__}: {e}"[:400]
        rows.append((name, ok, time.perf_counter() - t0, detail))
    print(f"\n{'check':<11} {'ok':<4} {'seconds':>8}  detail")
    for name, ok, seconds, detail in rows:
        print(f"{name:<11} {'yes' if ok else 'NO':<4} {seconds:>8.1f}  {detail}")
    return 0 if all(ok for _, ok, _, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
