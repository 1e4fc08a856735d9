"""Generated images and their streaming generation: records (a rendered, captioned RGB + thermal
pair) and camera images (one modality, for the visible-infrared layouts)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

from .captions import make_captions
from .identities import (
    Identity,
    ViewSpec,
    assign_splits,
    each_identity,
    image_count,
    sample_view,
    seeded_rng,
)
from .rendering import Rendered, render


@dataclass
class ImageRecord:
    """One generated image: an RGB + thermal pair of the same scene with its captions."""

    pid: int  # 1-based identity id
    index: int  # 1-based image index within the identity
    name: str  # "<pid %04d>_<index %02d>"
    split: str
    view: str
    challenge: str
    scene: str
    rgb: Image.Image | None
    thermal: Image.Image | None  # mode "L"
    captions: list[str]
    no_color_captions: list[str]
    visible: tuple[str, ...]  # attributes visible in this render (hair, hat, upper, ...)
    identity: Identity
    spec: ViewSpec


def _render_view(
    identity: Identity,
    index: int,
    seed: int,
    height: int,
    width: int,
    modalities: Iterable[str],
    challenge_weights: Mapping[str, float] | None,
    view_weights: Mapping[str, float] | None,
    stream: int,
) -> tuple[ViewSpec, Rendered]:
    """Sample view ``index`` of ``identity`` (in image family ``stream``) and render it."""
    spec = sample_view(
        identity,
        index,
        seed,
        challenge_weights=challenge_weights,
        view_weights=view_weights,
        stream=stream,
    )
    return spec, render(identity, spec, height, width, modalities)


def make_record(
    identity: Identity,
    index: int,
    seed: int = 0,
    split: str = "train",
    height: int = 128,
    width: int = 64,
    *,
    challenge_weights: Mapping[str, float] | None = None,
    view_weights: Mapping[str, float] | None = None,
    captions_per_image: int | tuple[int, int] = (1, 2),
    modalities: Iterable[str] = ("rgb", "thermal"),
    stream: int = 0,
) -> ImageRecord:
    """Sample, render and caption image ``index`` (1-based) of ``identity``."""
    spec, out = _render_view(
        identity, index, seed, height, width, modalities, challenge_weights, view_weights, stream
    )
    lo, hi = (
        (captions_per_image,) * 2 if isinstance(captions_per_image, int) else captions_per_image
    )
    rng = seeded_rng(seed, identity.pid, index, 2, stream)
    n = int(rng.integers(lo, hi + 1))
    caps, plain = make_captions(identity, spec, out.visible, rng, n)
    return ImageRecord(
        pid=identity.pid,
        index=index,
        name=f"{identity.pid:04d}_{index:02d}",
        split=split,
        view=spec.view,
        challenge=spec.challenge,
        scene=spec.scene,
        rgb=out.rgb,
        thermal=out.thermal,
        captions=caps,
        no_color_captions=plain,
        visible=out.visible,
        identity=identity,
        spec=spec,
    )


def generate(
    num_ids: int,
    images_per_id: int | tuple[int, int] = (2, 4),
    seed: int = 0,
    height: int = 128,
    width: int = 64,
    *,
    split_ratios: Mapping[str, float] | None = None,
    challenge_weights: Mapping[str, float] | None = None,
    view_weights: Mapping[str, float] | None = None,
    captions_per_image: int | tuple[int, int] = (1, 2),
    modalities: Iterable[str] = ("rgb", "thermal"),
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[ImageRecord]:
    """Stream the records of identities ``1..num_ids``, image by image.

    Nothing is kept in memory between records. ``split_ratios`` defaults to 70 % train / 30 %
    test by identity; ``progress(ids_done, num_ids)`` is called after each identity.
    """
    splits = assign_splits(num_ids, seed, split_ratios)
    for ident in each_identity(num_ids, seed, progress):
        for index in range(1, image_count(ident.pid, seed, images_per_id) + 1):
            yield make_record(
                ident,
                index,
                seed,
                splits[ident.pid],
                height,
                width,
                challenge_weights=challenge_weights,
                view_weights=view_weights,
                captions_per_image=captions_per_image,
                modalities=modalities,
            )


def contact_sheet(records: Iterable[ImageRecord], cols: int = 6, zoom: int = 2) -> Image.Image:
    """RGB | thermal pairs with their view / challenge under each (for eyeballing)."""
    records = list(records)
    if not records:
        raise ValueError("no records")
    w, h = records[0].rgb.size
    tw, th = 2 * w * zoom + 6, h * zoom + 26
    rows = (len(records) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * tw, rows * th), (255, 255, 255))
    d = ImageDraw.Draw(sheet)
    for i, rec in enumerate(records):
        x, y = (i % cols) * tw, (i // cols) * th
        sheet.paste(rec.rgb.resize((w * zoom, h * zoom), Image.Resampling.NEAREST), (x, y))
        sheet.paste(
            rec.thermal.convert("RGB").resize((w * zoom, h * zoom), Image.Resampling.NEAREST),
            (x + w * zoom + 2, y),
        )
        d.text((x + 2, y + h * zoom + 1), f"{rec.name} {rec.view}", fill=(0, 0, 0))
        d.text((x + 2, y + h * zoom + 12), rec.challenge, fill=(160, 0, 0))
    return sheet


@dataclass
class CameraImage:
    """One camera image of a visible-infrared layout: stream 0 = visible (an RGB render),
    1 = infrared (a thermal render); captioned on demand."""

    identity: Identity
    index: int  # view index within the identity's images of this stream, from 1
    stream: int
    camera: int
    k: int  # image number within this camera, from 1
    spec: ViewSpec
    image: Image.Image
    visible: tuple[str, ...]

    def caption(self, seed: int) -> str:
        """One caption; the colour-free version for infrared images."""
        rng = seeded_rng(seed, self.identity.pid, self.index, 2, self.stream)
        caps, plain = make_captions(self.identity, self.spec, self.visible, rng, 1)
        return caps[0] if self.stream == 0 else plain[0]


def camera_images(
    identity: Identity,
    seed: int,
    height: int,
    width: int,
    cameras: tuple[Sequence[int], Sequence[int]],
    count: Callable[[int, int], int],
    weights: tuple[Mapping[str, float], Mapping[str, float]],
    view_weights: Mapping[str, float] | None = None,
) -> Iterator[CameraImage]:
    """Render the images of ``identity``: the visible cameras, then the infrared ones.

    ``cameras`` = (visible camera ids, infrared camera ids); ``count(stream, camera)`` is the
    number of images of a camera; ``weights`` the challenge weights of each stream. The view
    index runs on over the cameras of a stream, so every image of a stream is another view.
    """
    for stream, cams in enumerate(cameras):
        index = 0
        for cam in cams:
            for k in range(1, count(stream, cam) + 1):
                index += 1
                modality = "rgb" if stream == 0 else "thermal"
                spec, out = _render_view(
                    identity,
                    index,
                    seed,
                    height,
                    width,
                    (modality,),
                    weights[stream],
                    view_weights,
                    stream,
                )
                image = out.rgb if stream == 0 else out.thermal
                yield CameraImage(identity, index, stream, cam, k, spec, image, out.visible)
