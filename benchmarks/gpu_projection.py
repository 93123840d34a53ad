"""A GPU projection on paper: what one sample costs on Llama-3.1-8B at full depth.

No GPU may be at hand, so this counts instead of timing: for the floor (one frozen-weight
forward and backward in bfloat16) and for each statistic by the route the cost model
(layerscope.analysis.compute.routes, with its GPU weights) chooses, the operations, the bytes kept, and
the separate kernel-level calls (QRs, SVDs, matrix products) one sample needs. Seconds are
estimates from the assumed rates below, not measurements; ``benchmarks/gpu_check.sh`` measures
the same rows where a GPU is lent, and benchmarks/README.md records both.

    python benchmarks/gpu_projection.py [--lengths 512,2048,8192] [--markdown]
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from layerscope.analysis.compute.routes import (
    GPU_WEIGHTS,
    RAW,
    ProjectionShape,
    cosine_costs,
    plan_sample,
    spectrum_costs,
)

# Llama-3.1-8B
LAYERS, HIDDEN, KV, INTERMEDIATE, VOCAB = 32, 4096, 1024, 14336, 128256
SHAPES = {
    "q": ProjectionShape(HIDDEN, HIDDEN, LAYERS),
    "k": ProjectionShape(KV, HIDDEN, LAYERS),
    "v": ProjectionShape(KV, HIDDEN, LAYERS),
    "o": ProjectionShape(HIDDEN, HIDDEN, LAYERS),
}
SHARING = {"q": 3, "k": 3, "v": 3, "o": 1}

# Assumed H100 rates (operations per second) for the estimate; none of them measured here.
RATES = {
    "bf16 matmul": 600e12,  # dense bf16 tensor cores, well-shaped products
    "fp32 matmul": 50e12,  # float32 without TF32 (torch's default "highest" precision)
    "fp64 matmul": 50e12,  # H100 float64 tensor cores
    "qr": 2e12,  # cuSOLVER geqrf of tall-skinny float32 matrices
    "svd": 0.15e12,  # cuSOLVER gesvd, values only, float32 (a 4096 x 4096 one: about 1.2 s)
}
SMALL_CALL_SECONDS = 2e-3  # a small QR or SVD call's floor on a GPU (launches, host syncs)
BLOCK_ENTRIES = 1 << 22  # spectral.BLOCK_ENTRIES
FORMED_CHUNK_COLUMNS = 1 << 16  # cosines.FORMED_CHUNK_COLUMNS
FACTOR_CHUNK_ENTRIES = 1 << 24  # cosines.FACTOR_CHUNK_ENTRIES


@dataclass
class Row:
    what: str
    route: str
    operations: float
    bytes_kept: float
    calls: int
    seconds: float


def linear_parameters() -> int:
    per_layer = 2 * HIDDEN * HIDDEN + 2 * HIDDEN * KV + 3 * HIDDEN * INTERMEDIATE
    return LAYERS * per_layer + HIDDEN * VOCAB


def floor_row(tokens: int) -> Row:
    matmuls = 2 * 2.0 * tokens * linear_parameters()  # forward, backward's activation grads
    attention = 7.0 * tokens * tokens * HIDDEN * LAYERS  # causal flash forward + backward
    operations = matmuls + attention
    # what autograd keeps per token (bf16): ~12 x hidden + 6 x intermediate per layer, logits
    kept = tokens * (LAYERS * (12 * HIDDEN + 6 * INTERMEDIATE) * 2 + VOCAB * 10)
    calls = LAYERS * 30 * 2  # roughly: a few dozen kernels per layer, forward and backward
    return Row(
        "floor (fwd+bwd)", "bf16", operations, kept, calls, operations / RATES["bf16 matmul"]
    )


def statistic_rows(tokens: int) -> list[Row]:
    positions = tokens - 1
    plan = plan_sample(SHAPES, positions, cosines=True, entry_statistics=True, weights=GPU_WEIGHTS)
    rows = []
    for name, shape in SHAPES.items():
        route = plan[name]
        raw = spectrum_costs(shape, positions, SHARING[name], RAW)
        t = positions
        if route.spectrum == "factors":
            qr_ops = 2 * t * t * shape.rows + 2 * t * t * shape.cols / SHARING[name]
            svd_ops = raw["factors"] - qr_ops
            calls = LAYERS * (2 + 1 + 1)  # QR of D, QR of X (shared), the core, svdvals
            seconds = LAYERS * (
                max(qr_ops / RATES["qr"], SMALL_CALL_SECONDS)
                + max(svd_ops / RATES["svd"], SMALL_CALL_SECONDS)
            )
            operations = raw["factors"] * LAYERS
        else:
            operations = raw["formed"] * LAYERS
            calls = LAYERS
            seconds = LAYERS * max(raw["formed"] / RATES["svd"], SMALL_CALL_SECONDS)
        rows.append(Row(f"spectrum {name}", route.spectrum, operations, 0, calls, seconds))
        forming = 2.0 * t * shape.entries * LAYERS
        blocks = 1 if route.entries == "formed" else math.ceil(shape.entries / BLOCK_ENTRIES)
        rows.append(
            Row(
                f"G and max/min {name}",
                route.entries or "-",
                forming,
                0,
                LAYERS * 2 * blocks,
                forming / RATES["fp32 matmul"],
            )
        )
        cost = cosine_costs(shape, positions, SHARING[name], RAW)[route.cosines or "factors"]
        if route.cosines == "formed":
            chunks = math.ceil(shape.entries / FORMED_CHUNK_COLUMNS)
            rows.append(
                Row(
                    f"cosines {name}",
                    "formed",
                    cost,
                    route.formed_bytes,
                    chunks,
                    cost / RATES["fp64 matmul"],
                )
            )
        else:
            per_chunk = max(1, FACTOR_CHUNK_ENTRIES // (t * t))
            calls = sum(2 * math.ceil((layer + 1) / per_chunk) for layer in range(LAYERS))
            kept = LAYERS * t * (shape.rows + shape.cols / SHARING[name]) * 4
            rows.append(
                Row(f"cosines {name}", "factors", cost, kept, calls, cost / RATES["fp32 matmul"])
            )
    return rows


def paper_row(tokens: int) -> Row:
    """The paper's procedure: every weight's gradient, a full SVD of each attention matrix
    (counted as values only: a lower bound, its SVD also forms the singular vectors)."""
    svd = sum(spectrum_costs(s, tokens, 1, RAW)["formed"] for s in SHAPES.values()) * LAYERS
    floor = floor_row(tokens)
    weight_gradients = 2.0 * tokens * linear_parameters()
    seconds = floor.seconds + weight_gradients / RATES["bf16 matmul"] + svd / RATES["svd"]
    operations = floor.operations + weight_gradients + svd
    return Row("paper's procedure", "full SVD", operations, 0, LAYERS * 4, seconds)


def _size(value: float, unit: str) -> str:
    for prefix, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="512,2048,8192")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    print("assumed rates: " + ", ".join(f"{k} {_size(v, 'op/s')}" for k, v in RATES.items()))
    for tokens in (int(x) for x in args.lengths.split(",")):
        rows = statistic_rows(tokens)
        floor = floor_row(tokens)
        statistics = sum(r.seconds for r in rows)
        print(f"\nLlama-3.1-8B, {LAYERS} layers, {tokens} tokens (attention q, k, v, o)")
        print("| what | route | operations | memory kept | calls | est. seconds |")
        print("|---|---|---|---|---|---|")
        for row in [floor, *rows, paper_row(tokens)]:
            print(
                f"| {row.what} | {row.route} | {_size(row.operations, 'op')} | "
                f"{_size(row.bytes_kept, 'B') if row.bytes_kept else '-'} | "
                f"{row.calls or '-'} | {row.seconds:.3f} |"
            )
        print(
            f"| **statistics, all** | | {_size(sum(r.operations for r in rows), 'op')} | | "
            f"{sum(r.calls for r in rows)} | {statistics:.3f} ({statistics / floor.seconds:.0f}x "
            f"the floor) |"
        )


if __name__ == "__main__":
    main()
