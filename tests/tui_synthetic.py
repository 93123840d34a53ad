"""Deterministic synthetic runs written through the cache's own writing API, for TUI tests.

The explorer's browsing screens are tested against a cache filled here (no model, no torch), so
the screens show fixed numbers (snapshot tests) and the torch-free browsing path is exercised
exactly as a user browsing results computed elsewhere would.

The numbers follow the paper's qualitative picture so that the screens look like real use:
fast thinking (none_cot) has larger, more uneven gradient norms across layers than slow thinking
(detailed_cot), and irrelevant responses have larger norms than correct ones.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import tempfile
from pathlib import Path

from layerscope.analysis.base.records import (
    ATTENTION_PROJECTIONS,
    MATRIX_STATISTICS,
    BatchResult,
    MatrixStatistics,
    RunHeader,
    Sample,
    SampleResult,
    SkippedSample,
    TargetInfo,
)
from layerscope.analysis.cache import ResultsCache

LAYERS = 6
SAMPLES = 12
TYPE_SCALE = {
    "none_cot": 3.0,
    "simplified_cot": 1.8,
    "detailed_cot": 1.0,
    "none_cot_irrelevant": 4.2,
}
SETTINGS = {"mode": "base", "max_length": 512, "modules": "attn", "statistics_version": 1}


def run_id_for(model: str, dataset: str, response_type: str, mode: str = "base") -> str:
    return hashlib.sha256(f"{model}|{dataset}|{response_type}|{mode}".encode()).hexdigest()


def _statistics(scale: float, layer: int, projection: str, sample: int) -> dict[str, float]:
    shape = 1.0 + 0.6 * math.sin(layer * 1.3 + "qkvo".index(projection)) * scale / 3
    wobble = 1.0 + 0.05 * ((sample * 7 + layer * 3) % 5 - 2)
    nuclear = scale * shape * wobble * (1.0 + 0.4 * (LAYERS - layer) / LAYERS)
    sigma_max = nuclear * 0.3
    frobenius = nuclear * 0.45
    values = {
        "mean": 1e-4 * (layer - 2.5) * scale,
        "max": 0.02 * scale * wobble,
        "min": -0.02 * scale * wobble,
        "frobenius_norm": frobenius,
        "nuclear_norm": nuclear,
        "sigma_max": sigma_max,
        "sigma_min": nuclear * 1e-4,
        "sigma1_ratio": sigma_max / nuclear,
        "nuclear_per_loss": nuclear / (1.0 + scale),
        "effective_rank": 10.0 + 2.0 * layer / scale + sample % 3,
        "stable_rank": (frobenius / sigma_max) ** 2,
    }
    assert set(values) == set(MATRIX_STATISTICS)
    return values


def sample_text(response_type: str, index: int) -> Sample:
    a, b = 3 + index, 4 + 2 * index
    instruction = f"Tom has {a} apples and buys {b} more. How many apples does he have now?"
    if response_type.startswith("none_cot"):
        output = f"The answer is {a + b}."
    elif response_type.startswith("simplified_cot"):
        output = f"{a} + {b} = {a + b}. The answer is {a + b}."
    else:
        output = (
            f"Step 1: Tom starts with {a} apples. Step 2: he buys {b} more. "
            f"Step 3: {a} + {b} = {a + b}. The answer is {a + b}."
        )
    if response_type.endswith("_irrelevant"):
        output = "The river Alder flows through the town of Marrow into the northern sea."
    return Sample(index=index, instruction=instruction, output=output)


def begin(
    db_path: Path,
    response_type: str,
    *,
    model: str = "tiny",
    dataset: str = "math",
    mode: str = "base",
    samples: int = SAMPLES,
    requested: int | None = None,
) -> str:
    """Create (or reopen) a run and mark it running; returns its id. `requested`: the samples
    its request asked for, as a compute records it (none recorded: all `samples`)."""
    run_id = run_id_for(model, dataset, response_type, mode)
    targets = [
        TargetInfo(layer, p, f"model.layers.{layer}.self_attn.{p}_proj", 64, 64)
        for layer in range(LAYERS)
        for p in ATTENTION_PROJECTIONS
    ]
    ResultsCache(db_path).begin_run(
        RunHeader(
            run_id,
            model=model,
            dataset=dataset,
            response_type=response_type,
            mode=mode,
            samples_total=samples,
            targets=targets,
            settings={**SETTINGS, "mode": mode},
            provenance={"source": "synthetic test data"}
            | ({"requested": requested} if requested is not None else {}),
        )
    )
    return run_id


def batch(response_type: str, indices: list[int], total: int, mode: str = "base") -> BatchResult:
    """Synthetic results for these sample indices (sample 5 is always skipped)."""
    scale = TYPE_SCALE.get(response_type, 2.0) * (0.8 if mode == "instruct" else 1.0)
    results = []
    skipped = []
    for index in indices:
        if index == 5:
            skipped.append(SkippedSample(index, "no response tokens left after truncation"))
            continue
        text = sample_text(response_type, index)
        matrices = [
            MatrixStatistics(layer, p, _statistics(scale, layer, p, index))
            for layer in range(LAYERS)
            for p in ATTENTION_PROJECTIONS
        ]
        cosines = {
            p: [
                [
                    1.0 if i == j else round(0.9 - 0.15 * abs(i - j) * scale / 2, 4)
                    for j in range(LAYERS)
                ]
                for i in range(LAYERS)
            ]
            for p in ATTENTION_PROJECTIONS
        }
        results.append(
            SampleResult(
                index=index,
                loss=round(1.0 + 0.1 * scale + 0.07 * ((index * 5) % 7), 4),
                prompt_tokens=20 + index,
                response_tokens=len(text.output.split()) * 2,
                matrices=matrices,
                layer_cosines=cosines,
            )
        )
    return BatchResult(results, skipped, len(indices), total)


def write(
    db_path: Path,
    run_id: str,
    response_type: str,
    indices: list[int],
    total: int,
    mode: str = "base",
) -> None:
    texts = {index: sample_text(response_type, index) for index in indices}
    ResultsCache(db_path).write_batch(run_id, batch(response_type, indices, total, mode), texts)


def add_run(
    db_path: Path,
    response_type: str,
    *,
    model: str = "tiny",
    dataset: str = "math",
    mode: str = "base",
    samples: int = SAMPLES,
    stored: int | None = None,
    status: str = "complete",
) -> str:
    """Write one run; `stored` < `samples` leaves it partial with the given status."""
    run_id = begin(db_path, response_type, model=model, dataset=dataset, mode=mode, samples=samples)
    count = samples if stored is None else stored
    write(db_path, run_id, response_type, list(range(count)), samples, mode)
    if status != "running":
        ResultsCache(db_path).finish_run(run_id, status)
    return run_id


_TEMPLATE: tuple[Path, dict[str, str]] | None = None


def _fill(db_path: Path) -> dict[str, str]:
    ids = {
        response_type: add_run(db_path, response_type)
        for response_type in ("none_cot", "simplified_cot", "detailed_cot", "none_cot_irrelevant")
    }
    ids["detailed_cot/instruct"] = add_run(
        db_path, "detailed_cot", mode="instruct", stored=8, status="cancelled"
    )
    return ids


def fill_cache(db_path: Path) -> dict[str, str]:
    """Four complete runs of tiny on math plus a cancelled instruct run: type -> run id.

    Built once per test session and copied: the content is the same every time.
    """
    global _TEMPLATE
    if _TEMPLATE is None:
        template = Path(tempfile.mkdtemp(prefix="layerscope-tui-")) / "results.duckdb"
        _TEMPLATE = (template, _fill(template))
    db_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_TEMPLATE[0], db_path)
    return dict(_TEMPLATE[1])
