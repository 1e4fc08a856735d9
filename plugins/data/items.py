"""Item types shared by every cross-modal dataset reader, loader and evaluator.

Items are named tuples whose second field is the identity, so fast-reid's PK sampler
(``NaiveIdentitySampler`` reads ``item[1]``) drives batches without knowing about captions.
fast-reid's ``CommDataset`` reads only three fields, so these items go through the plugin's own
datasets (``plugins.data.datasets``) instead.
"""

from typing import NamedTuple


class CaptionItem(NamedTuple):
    """One training sample: one caption of one image (or RGB + thermal pair)."""

    img_path: str  # RGB image (the only image for text-to-image datasets)
    pid: int  # identity; training ids are relabelled 0..N-1
    camid: int  # 0 for caption datasets (kept for fast-reid's (path, pid, camid) order)
    image_id: int  # index of the image (pair) within its split
    caption: str
    no_color_caption: str = ""  # the dataset's colour-free caption, "" when it has none
    t_path: str = ""  # thermal image of an RGBT pair, "" otherwise


class GalleryImage(NamedTuple):
    """One test gallery entry: an image or an RGB + thermal pair."""

    img_path: str
    pid: int
    camid: int
    image_id: int  # index within the split's gallery list
    t_path: str = ""
    name: str = ""  # file name as used by challenge-subset lists


class QueryCaption(NamedTuple):
    """One test query caption."""

    caption: str
    pid: int
    image_id: int  # index of the gallery image the caption describes
    no_color_caption: str = ""


class RetrievalSplit(NamedTuple):
    """A test (or val) split for text retrieval: queries, gallery and optional subsets.

    ``subsets`` maps a subset name (e.g. a lighting challenge) to gallery image ids; the metrics of
    a subset use the captions of those images as queries against the whole gallery.
    """

    captions: list
    images: list
    subsets: dict


class VIImage(NamedTuple):
    """One visible-infrared re-identification image.

    ``pid`` is relabelled 0..N-1 in training lists and keeps the dataset's own identity number in
    test lists. ``camid`` is the dataset's camera number (SYSU-MM01 1-6, LLCM 1-9 as in the file
    name, RegDB 1 = visible and 2 = thermal). fast-reid reads ``item[0..2]`` only.
    """

    path: str  # absolute path
    pid: int
    camid: int
    modality: str  # "visible" or "infrared" (thermal and near-infrared are both "infrared")


class VITestSet(NamedTuple):
    """Every test image of a VI-ReID dataset once; the protocol decides queries and gallery draws.

    Features are extracted once per evaluation in the order of ``images`` (index = position).
    """

    images: tuple  # tuple[VIImage, ...]
    protocol: str  # "sysumm01" | "regdb" | "llcm"
