"""ONNX export of a text retrieval model's two encoders, and onnxruntime inference on them.

``export_encoders`` writes ``image_encoder.onnx`` and ``text_encoder.onnx`` from a built model
(any ``RetrievalModel``: CLIP + SDM, IRRA, FMFA, CoRL, MGANet): each graph is the model's own
``encode_image`` / ``encode_text`` (small wrappers, nothing re-implemented), exported with
``torch.export`` so that the batch size and the caption length stay dynamic.

- ``image_encoder.onnx``: ``images`` (B, 3, H, W) float32 RGB in 0-255 (the model's own pixel
  mean / std are applied inside the graph); RGBT models take ``t_images`` as well, text-T
  models ``t_images`` alone. Output ``features`` (B, D).
- ``text_encoder.onnx``: ``token_ids`` (B, L) int64, 2 <= L <= the model's context length, so a
  caption can be fed padded to the context length or trimmed to its own tokens. Output
  ``features`` (B, D).

``tools/export_onnx.py`` adds ``onnx.json``, which records the sha256 of every file of the export
(``export_file_hashes``); ``OnnxEncoders`` checks the files against it before onnxruntime reads
them, so files of another export (or a truncated copy) beside it are refused.

``OnnxEncoders`` runs both files with onnxruntime (CUDA when the installed onnxruntime has it,
otherwise the CPU) and returns numpy features, as the torch model's ``encode_*`` would (not
L2-normalised). Exporting needs ``onnx`` and ``onnxscript`` besides torch; inference needs
only ``onnxruntime`` (``pip install 'fastreid-crossmodal[onnx]'``).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..data.captions import tokenize_batch
from ..modeling.clip import trim_token_ids
from ..modeling.retrieval import RetrievalModel
from .folders import sha256_file

__all__ = [
    "IMAGE_FILE",
    "MANIFEST_FILE",
    "TEXT_FILE",
    "ImageEncoderExport",
    "OnnxEncoders",
    "TextEncoderExport",
    "compare_with_torch",
    "export_encoders",
    "export_file_hashes",
    "is_export_entry",
    "image_input_names",
    "sample_token_ids",
    "trim_token_ids",
]

IMAGE_FILE = "image_encoder.onnx"
TEXT_FILE = "text_encoder.onnx"
MANIFEST_FILE = "onnx.json"
# Beyond ~2 GiB of weights a single ONNX protobuf cannot hold them; larger towers keep their
# weights in a ``<file>.data`` beside the graph (onnxruntime finds it there).
_MAX_EMBEDDED_BYTES = 1_500_000_000
SAMPLE_CAPTIONS = (
    "A woman with long black hair wears a red coat, blue jeans and white sneakers.",
    "A man in a grey shirt carries a black bag.",
    "A girl in a pink dress.",
)
_INSTALL_HINT = "pip install 'fastreid-crossmodal[onnx]' (or pip install -r requirements.txt)"
_EXPORT_AGAIN = "export the model again with tools/export_onnx.py"


def is_export_entry(name: str) -> bool:
    """Whether ``name`` is a file ``tools/export_onnx.py`` writes into its folder: the two
    graphs, their external weights (``<graph>.data`` and the like) and ``onnx.json``."""
    return name == MANIFEST_FILE or name.startswith((IMAGE_FILE, TEXT_FILE))


def export_file_hashes(onnx_dir: str) -> dict:
    """``{file name: sha256}`` of every file of an export folder but ``onnx.json``."""
    return {
        name: sha256_file(os.path.join(onnx_dir, name))
        for name in sorted(os.listdir(onnx_dir))
        if is_export_entry(name) and name != MANIFEST_FILE
    }


def image_input_names(model) -> tuple[str, ...]:
    """The image inputs ``model.encode_image`` reads: ``images`` and / or ``t_images``."""
    if not isinstance(model, RetrievalModel):
        raise TypeError(
            f"{type(model).__name__} is not a text retrieval model (plugins.modeling.retrieval."
            "RetrievalModel, with encode_image and encode_text): ONNX export covers the "
            "text-to-image and text-to-RGBT meta-architectures."
        )
    names = ()
    if model.fusion.needs_rgb:
        names += ("images",)
    if model.fusion.needs_thermal:
        names += ("t_images",)
    return names


class ImageEncoderExport(nn.Module):
    """``model.encode_image`` on positional tensors, in the order of ``input_names``.

    images (Tensor): (B, 3, H, W) 0-255 each (RGB, thermal) -> features (B, D)
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.input_names = image_input_names(model)

    def forward(self, *images):
        return self.model.encode_image(dict(zip(self.input_names, images, strict=True)))


class TextEncoderExport(nn.Module):
    """``model.encode_text``: token_ids (B, L) int64 -> features (B, D)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, token_ids):
        return self.model.encode_text(token_ids)


def sample_token_ids(context_length: int, captions: Sequence[str] = SAMPLE_CAPTIONS) -> Tensor:
    """Token ids (N, context_length) of ``captions``, zero-padded as the loaders give them."""
    return tokenize_batch(list(captions), context_length)


def _parameter_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def _export(module, args, path, input_names, dynamic_shapes):
    """torch.export -> ONNX at ``path``; weights inside the file unless they are too large."""
    try:
        import onnxscript  # noqa: F401  (torch.onnx's exporter translates through it)
    except ImportError as e:
        raise ImportError(f"ONNX export needs onnx and onnxscript: {_INSTALL_HINT}") from e
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # RGB and thermal share one batch dimension; torch says so once per export.
        warnings.filterwarnings("ignore", ".*The axis name: .* shares the same shape constraints")
        torch.onnx.export(
            module,
            args,
            path,
            dynamo=True,
            input_names=list(input_names),
            output_names=["features"],
            dynamic_shapes=dynamic_shapes,
            external_data=_parameter_bytes(module) > _MAX_EMBEDDED_BYTES,
            verbose=False,
        )


def export_encoders(model, out_dir: str, image_size: Sequence[int]) -> dict:
    """Write ``IMAGE_FILE`` and ``TEXT_FILE`` for ``model`` (a built, loaded RetrievalModel).

    The model is exported on the CPU in evaluation mode; it is left in evaluation mode.

    Args:
        image_size: (H, W) the image encoder is built for (``INPUT.SIZE_TEST``).
    Returns:
        dict: ``image_inputs`` (names), ``image_size`` [H, W], ``context_length``, ``opset``
        and the two file paths (``image_encoder``, ``text_encoder``).
    """
    from torch.export import Dim

    names = image_input_names(model)
    model.eval()
    if model.device.type != "cpu":
        raise ValueError(f"export the model from the CPU (it is on {model.device}): model.cpu()")
    os.makedirs(out_dir, exist_ok=True)
    height, width = (int(s) for s in image_size)
    context_length = int(model.text_encoder.context_length)
    # Example batches of 2 (images) and 3 (captions): torch.export would fix a dimension whose
    # example is 1 to 1.
    gen = torch.Generator().manual_seed(0)
    images = tuple(torch.rand(2, 3, height, width, generator=gen) * 255 for _ in names)
    batch = Dim("batch", min=1)
    image_path = os.path.join(out_dir, IMAGE_FILE)
    _export(
        ImageEncoderExport(model),
        images,
        image_path,
        names,
        {"images": tuple({0: batch} for _ in names)},
    )
    token_ids = sample_token_ids(context_length)
    text_path = os.path.join(out_dir, TEXT_FILE)
    _export(
        TextEncoderExport(model),
        (token_ids,),
        text_path,
        ["token_ids"],
        {"token_ids": {0: Dim("batch", min=1), 1: Dim("length", min=2, max=context_length)}},
    )
    info = {
        "image_inputs": list(names),
        "image_size": [height, width],
        "context_length": context_length,
    }
    opset = None
    for path in (image_path, text_path):
        opset = _add_metadata(path, info)
    return {"image_encoder": image_path, "text_encoder": text_path, **info, "opset": opset}


def _add_metadata(path: str, info: dict):
    """Store ``info`` (JSON values) in the file's metadata; returns its default-domain opset.

    ``OnnxEncoders`` reads it back, so the files describe themselves without ``onnx.json``.
    """
    import onnx

    graph = onnx.load(path, load_external_data=False)
    for key, value in info.items():
        graph.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(graph, path)
    return next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), None)


def compare_with_torch(model, encoders: OnnxEncoders, image_batches=(1, 3), seed=0) -> dict:
    """Largest |onnxruntime - torch| of each encoder on sample inputs, with the feature scale.

    Images: random 0-255 batches of each size in ``image_batches``. Captions: the sample
    captions padded to the context length (one batch), the batch trimmed to its longest
    caption, and each caption alone trimmed to its own tokens.

    Returns:
        dict: ``{"image": {...}, "text": {...}}``, each with ``max_abs_diff`` and ``scale``
        (the largest |torch feature|) as floats, and ``checked`` (what was fed).
    """
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    height, width = encoders.image_size
    image = {"max_abs_diff": 0.0, "scale": 0.0, "checked": []}
    for size in image_batches:
        inputs = {
            name: torch.rand(size, 3, height, width, generator=gen) * 255
            for name in encoders.image_inputs
        }
        ref = model.encode_image(dict(inputs)).cpu().numpy()
        out = encoders.encode_images(**{k: v.numpy() for k, v in inputs.items()})
        _accumulate(image, ref, out, f"batch {size}")

    text = {"max_abs_diff": 0.0, "scale": 0.0, "checked": []}
    padded = sample_token_ids(encoders.context_length)
    batches = [(padded, "padded"), (trim_token_ids(padded), "trimmed batch")]
    batches += [(trim_token_ids(row[None]), "one caption") for row in padded]
    for ids, what in batches:
        ref = model.encode_text(ids).cpu().numpy()
        out = encoders.encode_text(ids.numpy())
        _accumulate(text, ref, out, f"{what} {tuple(ids.shape)}")
    return {"image": image, "text": text}


def _accumulate(stats, ref, out, what):
    if out.shape != ref.shape:
        raise AssertionError(f"onnxruntime gave features {out.shape}, torch {ref.shape} ({what})")
    stats["max_abs_diff"] = max(stats["max_abs_diff"], float(np.abs(out - ref).max()))
    stats["scale"] = max(stats["scale"], float(np.abs(ref).max()))
    stats["checked"].append(what)


def _providers(device: str):
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise RuntimeError(
                f"device 'cuda': this onnxruntime has no CUDA provider (it has {available}); "
                "install onnxruntime-gpu instead of onnxruntime, or use device 'cpu'."
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device != "auto":
        raise ValueError(f"device {device!r}: expected 'auto', 'cuda' or 'cpu'")
    cuda = ["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []
    return cuda + ["CPUExecutionProvider"]


class OnnxEncoders:
    """The exported image and text encoders of one model, run with onnxruntime.

    Args:
        onnx_dir (str): folder written by ``tools/export_onnx.py`` (``image_encoder.onnx``,
            ``text_encoder.onnx``, optionally ``onnx.json``). When ``onnx.json`` records the
            files' sha256 (``files``), each file must match it.
        device (str): ``"auto"`` (CUDA when the installed onnxruntime provides it, else the
            CPU), ``"cuda"`` or ``"cpu"``.
        threads (int | None): CPU threads per session; None: ``OMP_NUM_THREADS`` when set
            (as torch does), else onnxruntime's choice (every core).
        require_manifest (bool): refuse a folder without ``onnx.json`` or whose ``onnx.json``
            records no file hashes (what ``build_index --onnx`` asks for).
    Raises:
        FileNotFoundError: a graph (or, with ``require_manifest``, ``onnx.json``) is missing.
        ValueError: one line: a file differs from ``onnx.json``, or cannot be loaded.

    Attributes:
        image_inputs (tuple): ``("images",)``, ``("images", "t_images")`` or ``("t_images",)``.
        image_size (tuple): (H, W) the image encoder takes.
        context_length (int): the longest token sequence the text encoder takes.
        manifest (dict): ``onnx.json`` (empty when the folder has none).
        providers (list): the onnxruntime providers in use.
    """

    def __init__(
        self,
        onnx_dir: str,
        device: str = "auto",
        threads: int | None = None,
        require_manifest: bool = False,
    ):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError(f"OnnxEncoders needs onnxruntime: {_INSTALL_HINT}") from e
        self.onnx_dir = onnx_dir
        paths = [os.path.join(onnx_dir, name) for name in (IMAGE_FILE, TEXT_FILE)]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(
                f"{', '.join(missing)}: no such file. Pass the folder that tools/export_onnx.py "
                "--out wrote."
            )
        self.manifest = self._read_manifest(require_manifest)
        options = ort.SessionOptions()
        if threads is None:
            threads = os.environ.get("OMP_NUM_THREADS", "")
            threads = int(threads) if threads.isdigit() else 0
        options.intra_op_num_threads = int(threads)
        options.log_severity_level = 3  # warnings about unused CUDA fallbacks are noise here
        self.providers = _providers(device)
        self._image = self._session(ort, paths[0], options)
        self._text = self._session(ort, paths[1], options)
        inputs = self._image.get_inputs()
        self.image_inputs = tuple(i.name for i in inputs)
        height, width = inputs[0].shape[2:]
        self.image_size = (int(height), int(width))
        meta = self._text.get_modelmeta().custom_metadata_map
        if "context_length" not in meta:
            raise ValueError(
                f"{paths[1]} does not record its context length (metadata 'context_length'): "
                "it was not written by tools/export_onnx.py; export the model again with it."
            )
        self.context_length = int(json.loads(meta["context_length"]))

    def _read_manifest(self, required: bool) -> dict:
        """``onnx.json`` ({} when absent and not ``required``), every file checked against the
        sha256 it records."""
        path = os.path.join(self.onnx_dir, MANIFEST_FILE)
        if not os.path.isfile(path):
            if required:
                raise FileNotFoundError(
                    f"{path}: no such file, so nothing says which model the .onnx files beside "
                    f"it come from or that they passed their check (an export that did not "
                    f"finish, or files copied without it): {_EXPORT_AGAIN}."
                )
            return {}
        try:
            with open(path, encoding="utf-8") as f:
                manifest = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path} cannot be read ({e}): {_EXPORT_AGAIN}.") from e
        if not isinstance(manifest, dict):
            raise ValueError(f"{path} is not a JSON object: {_EXPORT_AGAIN}.")
        files = manifest.get("files")
        if files is None:
            if required:
                raise ValueError(
                    f"{path} records no sha256 of the .onnx files (an export by an earlier "
                    f"tools/export_onnx.py), so they cannot be checked: {_EXPORT_AGAIN}."
                )
            return manifest
        for name in (IMAGE_FILE, TEXT_FILE):
            if name not in files:
                raise ValueError(f"{path} records no sha256 of {name}: {_EXPORT_AGAIN}.")
        for name, expected in sorted(files.items()):
            file = os.path.join(self.onnx_dir, name)
            if not os.path.isfile(file):
                raise FileNotFoundError(
                    f"{file}: no such file, but {path} lists it: {_EXPORT_AGAIN}."
                )
            if sha256_file(file) != expected:
                raise ValueError(
                    f"{file} is not the file {MANIFEST_FILE} records (its sha256 differs: "
                    f"changed, truncated, or copied in from another export): {_EXPORT_AGAIN}."
                )
        return manifest

    def _session(self, ort, path, options):
        try:
            return ort.InferenceSession(path, options, providers=self.providers)
        except Exception as e:  # onnxruntime's own exception classes derive from Exception
            if not type(e).__module__.startswith("onnxruntime"):
                raise
            detail = " ".join(str(e).split())[:200]
            raise ValueError(
                f"{path} cannot be loaded by onnxruntime ({detail}): the file is truncated or "
                f"not an ONNX export; {_EXPORT_AGAIN}."
            ) from e

    @property
    def embed_dim(self) -> int:
        """Feature width D (the image and text features have the same width)."""
        return int(self._image.get_outputs()[0].shape[1])

    def _image_array(self, name, value):
        if value is None:
            raise ValueError(
                f"{self.onnx_dir}/{IMAGE_FILE} takes {' and '.join(self.image_inputs)}; "
                f"{name} was not given."
            )
        array = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
        expected = (3, *self.image_size)
        if array.ndim != 4 or tuple(array.shape[1:]) != expected:
            raise ValueError(
                f"{name} has shape {tuple(array.shape)}; {self.onnx_dir}/{IMAGE_FILE} takes "
                f"(B, {', '.join(map(str, expected))}) RGB images in 0-255 (resize them to "
                f"INPUT.SIZE_TEST {list(self.image_size)})."
            )
        return np.ascontiguousarray(array, dtype=np.float32)

    def encode_images(self, images=None, t_images=None) -> np.ndarray:
        """Global image (or fused RGB + thermal) features.

        images, t_images (np.ndarray | Tensor): (B, 3, H, W) in 0-255, each as the model
            takes them (``image_inputs``; an unused one must be None)
        returns (np.ndarray): (B, D) float32
        """
        given = {"images": images, "t_images": t_images}
        extra = [k for k, v in given.items() if v is not None and k not in self.image_inputs]
        if extra:
            raise ValueError(
                f"{self.onnx_dir}/{IMAGE_FILE} takes only {' and '.join(self.image_inputs)}; "
                f"{' and '.join(extra)} given."
            )
        feed = {name: self._image_array(name, given[name]) for name in self.image_inputs}
        sizes = {name: a.shape[0] for name, a in feed.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"images and t_images have different batch sizes: {sizes}")
        return self._image.run(None, feed)[0]

    def encode_text(self, token_ids) -> np.ndarray:
        """Global caption features of token ids.

        token_ids (np.ndarray | Tensor): (B, L) or (L,) integer ids, 2 <= L <=
            ``context_length``, zero-padded after EOT (or trimmed: ``trim_token_ids``)
        returns (np.ndarray): (B, D) float32
        """
        if isinstance(token_ids, Tensor):
            token_ids = token_ids.detach().cpu().numpy()
        ids = np.asarray(token_ids)
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2 or not (2 <= ids.shape[1] <= self.context_length):
            raise ValueError(
                f"token_ids has shape {tuple(ids.shape)}; {self.onnx_dir}/{TEXT_FILE} takes "
                f"(B, L) ids with 2 <= L <= {self.context_length} (the model's context length)."
            )
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"token_ids must be integers, got {ids.dtype}")
        return self._text.run(None, {"token_ids": ids.astype(np.int64, copy=False)})[0]

    def encode_captions(self, captions: Sequence[str]) -> np.ndarray:
        """Features (N, D) of N caption strings, tokenised as in training and trimmed."""
        ids = tokenize_batch(list(captions), self.context_length)
        return self.encode_text(trim_token_ids(ids))
