"""RetrievalEvaluator: metrics, subsets with either gallery, image-to-text, ordering of inputs."""

import pytest
import torch

import plugins  # noqa: F401

# isort: split
from plugins.data.items import GalleryImage, QueryCaption, RetrievalSplit
from plugins.evaluation import RetrievalEvaluator

E1, E2 = [1.0, 0.0], [0.0, 1.0]


def split_and_features():
    """One caption (pid 1, of image 0, a 'dark' image). Its own dark image is far from it; the
    same person's normal image (1) matches it exactly; a dark image of pid 2 is in between."""
    images = [
        GalleryImage("a.jpg", 1, 0, 0, name="a.jpg"),
        GalleryImage("b.jpg", 1, 0, 1, name="b.jpg"),
        GalleryImage("c.jpg", 2, 0, 2, name="c.jpg"),
    ]
    split = RetrievalSplit([QueryCaption("a person", 1, 0)], images, {"dark": [0, 2]})
    feats = torch.tensor([E1, E2, E1, [0.6, 0.8]])  # query, then gallery images 0..2
    return split, feats


def evaluate(evaluator, feats, order):
    evaluator.reset()
    for index in order:  # out of order on purpose: the evaluator must sort by index
        evaluator.process({"index": torch.tensor([index])}, feats[index : index + 1])
    return evaluator.evaluate()


def test_whole_gallery_and_subset_gallery():
    split, feats = split_and_features()
    whole = evaluate(RetrievalEvaluator(split), feats, [3, 1, 0, 2])
    assert whole["R1"] == 100.0 and whole["metric"] == 100.0
    assert whole["RSum"] == 300.0
    assert whole["dark/R1"] == 100.0  # answered by the daylight image of the same person
    own = evaluate(RetrievalEvaluator(split, subset_gallery="subset"), feats, [2, 0, 3, 1])
    assert own["R1"] == 100.0
    assert own["dark/R1"] == 0.0  # only dark images compete: the wrong person ranks first
    assert own["dark/mAP"] == 50.0


def test_image_to_text_on_request():
    split, feats = split_and_features()
    results = evaluate(RetrievalEvaluator(split, i2t=True), feats, [0, 1, 2, 3])
    assert {"i2t/R1", "i2t/mAP"} <= set(results)
    assert "i2t/R1" not in evaluate(RetrievalEvaluator(split), feats, [0, 1, 2, 3])


def test_missing_items_are_an_error():
    split, feats = split_and_features()
    with pytest.raises(RuntimeError, match="expected 4"):
        evaluate(RetrievalEvaluator(split), feats, [0, 1, 2])


def test_unknown_subset_gallery_is_an_error():
    split, _ = split_and_features()
    with pytest.raises(ValueError, match="subset_gallery"):
        RetrievalEvaluator(split, subset_gallery="dark")


def test_inference_timer_counts_queries_and_gallery_items_apart():
    import time

    from plugins.evaluation.timing import InferenceTimer

    class Encoder(torch.nn.Module):
        def forward(self, batch):
            if "text" in batch:
                time.sleep(0.02)
                return torch.zeros(len(batch["text"]), 2)
            return torch.zeros(len(batch["images"]), 2)

    timer = InferenceTimer(Encoder())
    timer({"text": torch.zeros(4, 3)})
    timer({"images": torch.zeros(10, 3, 2, 2)})
    timer({"images": torch.zeros(6, 3, 2, 2)})
    assert timer.items == {"query": 4, "gallery": 16}
    ms = timer.per_item_ms()
    assert ms["query"] >= 20.0 / 4 and ms["gallery"] < ms["query"]
    line = timer.summary(256, "cpu")
    assert "ms per query caption (4)" in line and "ms per gallery item (16)" in line
    assert (
        InferenceTimer(Encoder()).per_item_ms()["query"]
        != InferenceTimer(Encoder()).per_item_ms()["query"]
    )  # NaN
