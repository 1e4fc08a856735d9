"""Inference time per query and per gallery item, measured around the model's forward."""

import time

import torch
from torch import nn


class InferenceTimer(nn.Module):
    """Wraps a model for ``inference_on_dataset`` and times its forward per kind of batch.

    A batch with ``text`` holds query captions; any other batch holds gallery items (an image,
    or an RGB + thermal pair). CUDA work is synchronised before each clock reading, so the time
    is the encoders' alone; loading and decoding images are not counted.

    Args:
        model (nn.Module): the evaluated model (its ``forward`` in eval mode returns features).
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.seconds = {"query": 0.0, "gallery": 0.0}
        self.items = {"query": 0, "gallery": 0}

    @staticmethod
    def _sync():
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    def forward(self, batch):
        kind = "query" if "text" in batch else "gallery"
        self._sync()
        start = time.perf_counter()
        out = self.model(batch)
        self._sync()
        self.seconds[kind] += time.perf_counter() - start
        self.items[kind] += len(out)
        return out

    def per_item_ms(self):
        """Milliseconds per query caption and per gallery item: ``{"query": ms, "gallery": ms}``
        (NaN for a kind that was not seen)."""
        return {
            kind: 1000.0 * self.seconds[kind] / self.items[kind]
            if self.items[kind]
            else float("nan")
            for kind in self.seconds
        }

    def summary(self, batch_size, device):
        """One log line with the per-item times and what they were measured on."""
        ms = self.per_item_ms()
        if not self.items["query"]:  # image re-identification: every item is an image
            return (
                f"inference time: {ms['gallery']:.3f} ms per image ({self.items['gallery']}); "
                f"model only, batches of {batch_size} on {device}"
            )
        return (
            f"inference time: {ms['query']:.3f} ms per query caption ({self.items['query']}), "
            f"{ms['gallery']:.3f} ms per gallery item ({self.items['gallery']}); encoders only, "
            f"batches of {batch_size} on {device}"
        )
