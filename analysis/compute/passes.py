"""One forward and backward pass of a padded batch, and the response loss it differentiates.

Why its own module: the per-sample exactness of the fast method rests here, not in the
statistics. The batch is right-padded (positions stay 0..T-1 whatever the mask) and its loss
is the sum of the samples' mean response losses, so the output gradients of each sample's rows
are exactly those of that sample alone; the reference method differentiates the same loss of
one sample. The captures and statistics only see the tensors the hooks hand them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from layerscope.analysis.compute.spectral import working_dtype

if TYPE_CHECKING:
    import torch

    from layerscope.analysis.compute.text import EncodedSample
    from layerscope.analysis.models.loading import LoadedModel


def response_loss(
    logits: torch.Tensor, input_ids: torch.Tensor, encoded: EncodedSample
) -> torch.Tensor:
    """Mean cross-entropy over the response tokens of one sample, in float32 or wider."""
    import torch

    first = max(encoded.response_start, 1)
    predicted = logits[first - 1 : encoded.length - 1]
    predicted = predicted.to(working_dtype(predicted.dtype))
    return torch.nn.functional.cross_entropy(predicted, input_ids[first : encoded.length])


def padded_batch(
    loaded: LoadedModel, encoded: list[EncodedSample]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and mask (positions are 0..T-1 whatever the mask, so pad right)."""
    import torch

    longest = max(e.length for e in encoded)
    pad = loaded.tokenizer.pad_token_id or 0
    input_ids = torch.full((len(encoded), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(encoded), longest), dtype=torch.long)
    for row, sample in enumerate(encoded):
        input_ids[row, : sample.length] = torch.tensor(sample.input_ids)
        mask[row, : sample.length] = 1
    return input_ids.to(loaded.device), mask.to(loaded.device)


def forward_backward(
    loaded: LoadedModel, encoded: list[EncodedSample], input_ids: torch.Tensor, mask: torch.Tensor
) -> list[torch.Tensor]:
    """One forward and backward of a padded batch; the loss is the sum of the samples' mean
    response losses, so each sample's output gradients are exactly its own. Returns the
    per-sample losses (0-d tensors)."""
    import torch

    with torch.enable_grad():
        model = loaded.model
        logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
        losses = [response_loss(logits[row], input_ids[row], e) for row, e in enumerate(encoded)]
        del logits
        torch.stack(losses).sum().backward()
    return losses
