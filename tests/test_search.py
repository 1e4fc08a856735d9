"""Text search: gallery listing, index building (exact / IVF / HNSW), query encoding, the CLIs.

Every index here is built from a tiny CLIP checkpoint saved by the test; exact results are
compared with a brute-force torch ranking of features encoded independently of the index code.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import plugins  # noqa: E402, F401  (fastreid compatibility fixes, registration)

# isort: split
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from plugins.data.captions import tokenize  # noqa: E402
from plugins.data.transforms import PairTransform, read_image  # noqa: E402
from plugins.search import (  # noqa: E402
    GalleryError,
    IndexError_,
    QueryEncoder,
    SearchError,
    SearchIndex,
    TextSearcher,
    build_index,
    list_gallery,
)
from plugins.search.index import recall_at_k  # noqa: E402
from tests.fixtures_model import ROOT, TINY_CLIP, build_model_from  # noqa: E402
from tests.fixtures_text import write_cuhkpedes, write_image, write_rgbtpedes  # noqa: E402

BUILD_INDEX = str(ROOT / "tools" / "build_index.py")
SEARCH = str(ROOT / "tools" / "search.py")
TIPR = "configs/Demo/tipr_clip_sdm.yml"
MGANET = "configs/Demo/mganet.yml"
# The tiny CLIP, read in the main process.
OPTS = TINY_CLIP + ["DATALOADER.TEST_NUM_WORKERS", "0"]
QUERY = "A woman in a red coat with a black bag"
# The nested gallery: relative path -> colour; listing order is the sorted relative paths.
GALLERY = {
    "b/x/3.png": (200, 30, 30),
    "a.jpg": (20, 200, 40),
    "b/1.PNG": (30, 30, 220),
    "b/x/y/2.jpeg": (240, 240, 20),
    "c/4.bmp": (10, 10, 10),
    "c/5.png": (250, 250, 250),
    "b/0.png": (120, 60, 200),
}
GALLERY_ORDER = ["a.jpg", "b/0.png", "b/1.PNG", "b/x/3.png", "b/x/y/2.jpeg", "c/4.bmp", "c/5.png"]


def save_checkpoint(model, path):
    torch.save({"model": model.state_dict()}, path)
    return str(path)


def run_tool(*args, env=None):
    """Run a tool; returns (exit status, stdout + stderr)."""
    proc = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **(env or {})),
    )
    return proc.returncode, proc.stdout + proc.stderr


def assert_one_line_error(status, output, phrase):
    lines = output.strip().splitlines()
    assert status == 1, output
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert phrase in lines[0], output


def brute_force_features(model, cfg, items):
    """Gallery features (N, D) encoded here, without the index code: test transform, one batch."""
    transform = PairTransform.from_config(cfg, is_train=False)
    rgb, thermal = [], []
    for item in items:
        if item.t_path:
            r, t = transform(read_image(item.path), read_image(item.t_path))
            rgb.append(r)
            thermal.append(t)
        else:
            rgb.append(transform(read_image(item.path)))
    batch = {"images": torch.stack(rgb)}
    if thermal:
        batch["t_images"] = torch.stack(thermal)
    with torch.no_grad():
        return F.normalize(model.eval().encode_image(batch), dim=1)


def brute_force_ranking(model, cfg, items, query, k):
    """(scores, indices) of the top-k by a full torch sort: the query padded to the context
    length, as the test loader tokenises it, against every gallery feature."""
    ids = tokenize(query, cfg.INPUT.TEXT.CONTEXT_LENGTH)[None]
    with torch.no_grad():
        q = F.normalize(model.eval().encode_text(ids), dim=1)
    sim = (q @ brute_force_features(model, cfg, items).t())[0]
    order = torch.sort(sim, descending=True, stable=True).indices[:k]
    return sim[order], order


@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
    """A tiny CLIPRetrieval checkpoint saved with a 7-way identity classifier, a nested image
    folder and its exact index (config without NUM_CLASSES: the classifier is skipped)."""
    tmp = tmp_path_factory.mktemp("rgb")
    cfg, model = build_model_from(TIPR, "MODEL.HEADS.NUM_CLASSES", "7")
    weights = save_checkpoint(model, tmp / "model_final.pth")
    gallery = tmp / "gallery"
    for rel, colour in GALLERY.items():
        write_image(str(gallery / rel), colour, size=(16, 32))
    (gallery / "b" / "notes.txt").write_text("not an image")
    index_dir = str(tmp / "index")
    build_index(str(ROOT / TIPR), OPTS + ["MODEL.WEIGHTS", weights], str(gallery), index_dir)
    return SimpleNamespace(
        tmp=tmp, cfg=cfg, model=model, weights=weights, gallery=str(gallery), index=index_dir
    )


@pytest.fixture(scope="module")
def rgbt(tmp_path_factory):
    """A tiny MGANet checkpoint (reconstruction heads included) and an RGBT-PEDES pair folder."""
    tmp = tmp_path_factory.mktemp("rgbt")
    cfg, model = build_model_from(MGANET)
    weights = save_checkpoint(model, tmp / "mganet.pth")
    return SimpleNamespace(
        tmp=tmp, cfg=cfg, model=model, weights=weights, pairs=write_rgbtpedes(str(tmp))
    )


# --------------------------------------------------------------------------------- building
def test_folder_index_is_exact_and_skips_the_classifier(rgb):
    state = torch.load(rgb.weights)["model"]
    assert state["classifier.weight"].shape[0] == 7  # the config builds no classifier at all
    searcher = TextSearcher(rgb.index)
    assert not hasattr(searcher.model, "classifier")
    assert [item.name for item in searcher.items] == GALLERY_ORDER
    assert all(os.path.isabs(item.path) and item.pid == -1 for item in searcher.items)
    identity = searcher.index.identity
    with open(rgb.weights, "rb") as f:
        assert identity["weights_sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert (identity["kind"], identity["count"], identity["pairs"]) == ("exact", 7, False)
    assert identity["feature_dim"] == rgb.model.embed_dim
    assert not searcher.has_identities

    results = searcher.search(QUERY, top_k=5)
    scores, order = brute_force_ranking(rgb.model, rgb.cfg, searcher.items, QUERY, 5)
    assert [r["index"] for r in results] == order.tolist()
    assert [r["rank"] for r in results] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([r["score"] for r in results], scores.numpy(), atol=1e-5)
    assert results[0]["name"] == GALLERY_ORDER[order[0]]
    # top_k beyond the gallery returns the whole gallery, ranked.
    assert len(searcher.search(QUERY, top_k=50)) == 7


def test_pair_folder_index_with_an_rgbt_model(rgbt, tmp_path):
    index_dir = str(tmp_path / "index")
    build_index(str(ROOT / MGANET), OPTS + ["MODEL.WEIGHTS", rgbt.weights], rgbt.pairs, index_dir)
    searcher = TextSearcher(index_dir)
    assert searcher.index.identity["pairs"] is True
    # Every pair of write_rgbtpedes' records, train and test alike, in name order.
    assert [item.name for item in searcher.items] == [
        "0001_night_01.jpg", "0004_dusk_01.jpg", "0008_day_01.jpg", "0008_day_02.jpg",
        "0100_night_01.jpg", "0100_night_02.jpg", "0101_glare_01.jpg", "0102_dark_01.jpg",
    ]  # fmt: skip
    for item in searcher.items:
        assert item.t_path == os.path.join(rgbt.pairs, "T", item.name)
    results = searcher.search(QUERY, top_k=3)
    scores, order = brute_force_ranking(rgbt.model, rgbt.cfg, searcher.items, QUERY, 3)
    assert [r["index"] for r in results] == order.tolist()
    np.testing.assert_allclose([r["score"] for r in results], scores.numpy(), atol=1e-5)
    assert all(r["t_path"] for r in results)


def test_dataset_gallery_keeps_identities_and_the_cli_searches_it(rgb, tmp_path, monkeypatch):
    write_cuhkpedes(str(tmp_path))
    monkeypatch.setenv("FASTREID_DATASETS", str(tmp_path))
    items = list_gallery("dataset:CUHKPEDES:val")
    assert [(i.name, i.pid) for i in items] == [
        ("test_query/p20_s1.jpg", 20),
        ("test_query/p20_s2.jpg", 20),
        ("test_query/p21_s1.jpg", 21),
    ]
    index_dir = str(tmp_path / "index")
    build_index(
        str(ROOT / TIPR), OPTS + ["MODEL.WEIGHTS", rgb.weights], "dataset:CUHKPEDES", index_dir
    )
    searcher = TextSearcher(index_dir)
    assert searcher.has_identities
    assert [(i.name, i.pid) for i in searcher.items] == [
        ("CUHK01/0030001.png", 30),
        ("CUHK01/0030002.png", 30),
        ("CUHK02/0031001.png", 31),
        ("CUHK02/0032001.png", 32),
    ]
    expected = searcher.search(QUERY, top_k=3)

    picture = str(tmp_path / "ranked.png")
    status, output = run_tool(
        SEARCH, "--index", index_dir, QUERY, "--top-k", "3", "--pid", "30", "--picture", picture
    )
    assert status == 0, output
    lines = re.findall(r"^(\d+) (-?\d\.\d{4}) (\S+)$", output, flags=re.M)
    assert [(int(r), n) for r, _, n in lines] == [(e["rank"], e["name"]) for e in expected]
    np.testing.assert_allclose(
        [float(s) for _, s, _ in lines], [e["score"] for e in expected], atol=1e-4
    )
    assert os.path.getsize(picture) > 0


def test_gallery_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTREID_DATASETS", str(tmp_path))
    with pytest.raises(GalleryError, match="does not exist"):
        list_gallery(str(tmp_path / "nowhere"))
    with pytest.raises(GalleryError, match="not a registered caption dataset"):
        list_gallery("dataset:NoSuchSet")
    with pytest.raises(GalleryError, match="CUHKPEDES folder not found") as e:
        list_gallery("dataset:CUHKPEDES")
    assert "\n" not in str(e.value)
    pairs = tmp_path / "pairs"
    write_image(str(pairs / "RGB" / "a.png"))
    write_image(str(pairs / "RGB" / "b.png"))
    write_image(str(pairs / "T" / "a.png"), mode="L")
    with pytest.raises(GalleryError, match="1 of the 2 RGB images .* no thermal image"):
        list_gallery(str(pairs))


# --------------------------------------------------------------------------------- queries
@pytest.mark.parametrize(
    "config,opts,direct",
    [
        ("configs/CUHKPEDES/clip_sdm.yml", [], True),  # 77 tokens, plain CLIP text encoder
        (MGANET, [], True),
        ("configs/Demo/corl.yml", ["MODEL.HEADS.NUM_CLASSES", "5"], False),  # [t; t]
    ],
)
def test_trimmed_query_equals_the_padded_encoding(config, opts, direct):
    cfg, model = build_model_from(config, "MODEL.TRAINING_HEADS", "False", *opts)
    model.eval()
    length = cfg.INPUT.TEXT.CONTEXT_LENGTH
    encoder = QueryEncoder(model, length)
    assert encoder.direct is direct
    long_query = " ".join(["a tall man with a black backpack and grey trousers"] * 8)
    for text in (QUERY, "man", long_query):
        ids = encoder.tokens(text)
        assert ids.shape[1] == min(len(tokenize(text, 1000).nonzero()), length)
        with torch.no_grad():
            padded = F.normalize(model.encode_text(tokenize(text, length)[None]), dim=1)
        trimmed = encoder(text)
        assert trimmed.shape == padded.shape
        assert (trimmed - padded).abs().max().item() < 1e-5
    assert encoder.tokens(QUERY).shape[1] < length  # trimming happened


# --------------------------------------------------------------------------------- approximate
def test_recall_at_k_by_hand():
    assert recall_at_k([[0, 1, 2]], [[0, 2, 5]]) == pytest.approx(2 / 3)
    assert recall_at_k([[0, -1], [3, 4]], [[0, 1], [4, 3]]) == pytest.approx(0.75)


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
def test_approximate_indexes_recall_on_clustered_features(kind):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, 32))
    feats = centres[rng.integers(0, 40, 3000)] + 0.3 * rng.standard_normal((3000, 32))
    items = [SimpleNamespace(pid=-1)] * 3000
    index = SearchIndex.build(feats.astype(np.float32), items, {}, kind)
    recall = index.recall(feats)
    if kind == "exact":
        assert recall == 1.0
    else:
        assert 0.85 < recall <= 1.0
    if kind == "ivf":
        assert index.identity["params"] == {"nlist": 55, "nprobe": 8}  # round(sqrt(3000))


def test_approximate_builds_print_their_recall(rgb, tmp_path, capsys):
    queries = tmp_path / "queries.txt"
    queries.write_text(f"{QUERY}\n\n a man in a white shirt \n")
    for kind, source in (
        ("ivf", r"7 held-out queries: random gallery features"),
        ("hnsw", r"2 queries from"),
    ):
        index_dir = str(tmp_path / kind)
        build_index(
            str(ROOT / TIPR),
            OPTS + ["MODEL.WEIGHTS", rgb.weights],
            rgb.gallery,
            index_dir,
            approx=kind,
            recall_queries=str(queries) if kind == "hnsw" else None,
        )
        out = capsys.readouterr().out
        assert re.search(
            rf"recall@7 of the {kind} index \(.*\) against exact search: 1\.0000 over {source}", out
        ), out
        searcher = TextSearcher(index_dir)
        assert searcher.index.kind == kind
        exact = TextSearcher(rgb.index).search(QUERY, 7)
        assert [r["index"] for r in searcher.search(QUERY, 7)] == [r["index"] for r in exact]


def test_build_index_cli_writes_an_index(rgb, tmp_path):
    index_dir = str(tmp_path / "index")
    status, output = run_tool(
        BUILD_INDEX, "--config-file", str(ROOT / TIPR), "MODEL.WEIGHTS", rgb.weights,
        "--gallery", rgb.gallery, "--out", index_dir, "--approx", "hnsw", "--batch-size", "3",
        *OPTS,
    )  # fmt: skip
    assert status == 0, output
    assert "encoding images: 7/7 (100%" in output
    assert re.search(r"recall@7 of the hnsw index .* against exact search: \d\.\d{4}", output)
    assert sorted(os.listdir(index_dir)) == ["identity.json", "index.faiss", "items.json"]
    with open(os.path.join(index_dir, "items.json")) as f:
        items = json.load(f)
    assert [item["name"] for item in items["items"]] == GALLERY_ORDER
    with open(os.path.join(index_dir, "identity.json")) as f:
        identity = json.load(f)
    assert identity["build_id"] == items["build_id"] and len(identity["build_id"]) == 32


# --------------------------------------------------------------------------------- refusals
def test_missing_or_incomplete_index_is_refused(rgb, tmp_path):
    status, output = run_tool(SEARCH, "--index", str(tmp_path / "none"), QUERY)
    assert_one_line_error(status, output, "does not exist")
    partial = tmp_path / "partial"
    shutil.copytree(rgb.index, partial)
    os.remove(partial / "identity.json")
    with pytest.raises(IndexError_, match="lacks identity.json"):
        SearchIndex.load(str(partial))
    shutil.copy(os.path.join(rgb.index, "identity.json"), partial / "identity.json")
    (partial / "items.json").write_text("[{]")
    with pytest.raises(IndexError_, match="items.json cannot be read"):
        SearchIndex.load(str(partial))


def test_empty_query_is_refused(rgb):
    status, output = run_tool(SEARCH, "--index", rgb.index, "  \t ")
    assert_one_line_error(status, output, "the query is empty")
    searcher = TextSearcher(rgb.index)
    with pytest.raises(SearchError, match="the query is empty"):
        searcher.search("   ")
    with pytest.raises(SearchError, match="top-k"):
        searcher.search(QUERY, top_k=0)


def test_modified_weights_file_is_refused(rgb, tmp_path):
    weights = str(tmp_path / "copy.pth")
    shutil.copy(rgb.weights, weights)
    index_dir = str(tmp_path / "index")
    build_index(str(ROOT / TIPR), OPTS + ["MODEL.WEIGHTS", weights], rgb.gallery, index_dir)
    state = torch.load(weights)["model"]
    state["text_encoder.ln_final.bias"] += 0.5
    torch.save({"model": state}, weights)
    status, output = run_tool(SEARCH, "--index", index_dir, QUERY)
    assert_one_line_error(status, output, f"{weights} was modified after the index was built")
    assert "tools/build_index.py" in output
    os.remove(weights)
    with pytest.raises(SearchError, match="are missing: pass --weights with a copy"):
        TextSearcher(index_dir)
    # The original file is a copy of the recorded weights: accepted under its own path.
    assert TextSearcher(index_dir, weights=rgb.weights).search(QUERY, 1)


def test_other_weights_are_refused(rgb, tmp_path):
    _, other = build_model_from(TIPR, "MODEL.HEADS.NUM_CLASSES", "7", "MODEL.CLIP.NAME", "tiny-vit")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.01)
    weights = save_checkpoint(other, tmp_path / "other.pth")
    status, output = run_tool(SEARCH, "--index", rgb.index, QUERY, "--weights", weights)
    assert_one_line_error(status, output, f"--weights {weights} are not the weights the index")


def test_empty_gallery_folder_is_refused(rgb, tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.txt").write_text("no images here")
    status, output = run_tool(
        BUILD_INDEX, "--config-file", str(ROOT / TIPR), "MODEL.WEIGHTS", rgb.weights,
        "--gallery", str(empty), "--out", str(tmp_path / "index"), *OPTS,
    )  # fmt: skip
    assert_one_line_error(status, output, "holds no images")
    assert not os.path.exists(tmp_path / "index")


def test_rgb_folder_for_an_rgbt_model_is_refused(rgb, rgbt, tmp_path):
    status, output = run_tool(
        BUILD_INDEX, "--config-file", str(ROOT / MGANET), "MODEL.WEIGHTS", rgbt.weights,
        "--gallery", rgb.gallery, "--out", str(tmp_path / "index"), *OPTS,
    )  # fmt: skip
    assert_one_line_error(status, output, "encodes RGB + thermal pairs but the gallery")
    # and the other way round: pairs for an RGB-only model
    with pytest.raises(SearchError, match="encodes RGB images only but the gallery"):
        build_index(
            str(ROOT / TIPR), OPTS + ["MODEL.WEIGHTS", rgb.weights], rgbt.pairs, str(tmp_path / "i")
        )


# --------------------------------------------------------------------------------- nothing silent
def load_tool(name):
    """A tool of tools/ as a module, to call its ``main`` in this process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_line_error(capsys):
    """The single stderr line of a tool that refused, without its ``error: `` prefix."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0][len("error: ") :], captured.out


def copy_gallery(rgb, folder):
    shutil.copytree(rgb.gallery, folder)
    return str(folder)


@pytest.mark.timeout(60)  # the old walk never ends on two loops: fail instead of hanging
def test_symbolic_link_loops_visit_each_folder_and_file_once(tmp_path):
    gallery = tmp_path / "g"
    write_image(str(gallery / "a.png"))
    write_image(str(gallery / "x" / "b.png"), (10, 200, 10))
    write_image(str(gallery / "y" / "c.png"), (10, 10, 200))
    os.symlink("../", gallery / "x" / "up")  # x/up/x/up/... : one loop
    os.symlink("../", gallery / "y" / "up")  # and a second one: 2^40 paths to walk
    os.symlink("a.png", gallery / "alias.png")  # one file under two names
    os.symlink(str(gallery / "y"), tmp_path / "y_link")
    os.symlink(str(tmp_path / "y_link"), gallery / "z")  # a folder reached by a second path
    assert [i.name for i in list_gallery(str(gallery))] == ["a.png", "x/b.png", "y/c.png"]


def test_one_symbolic_link_loop_indexes_each_image_once(tmp_path):
    gallery = tmp_path / "g"
    write_image(str(gallery / "sub" / "a.png"))
    os.symlink("../", gallery / "sub" / "loop")
    assert [i.name for i in list_gallery(str(gallery))] == ["sub/a.png"]


def test_a_second_build_into_a_folder_being_built_is_refused(rgb, tmp_path):
    from plugins.engine.defaults import OutputDirLock

    index_dir = tmp_path / "index"
    shutil.copytree(rgb.index, index_dir)
    before = {n: (index_dir / n).read_bytes() for n in os.listdir(index_dir)}
    opts = OPTS + ["MODEL.WEIGHTS", rgb.weights]
    with OutputDirLock(str(index_dir)):  # another build holds the folder
        with pytest.raises(
            SearchError, match=rf"being written by another process \(pid {os.getpid()},"
        ):
            build_index(str(ROOT / TIPR), opts, rgb.gallery, str(index_dir))
    assert {n: (index_dir / n).read_bytes() for n in before} == before
    # The lock went with the build: the next one replaces the folder whole, lock file included.
    build_index(str(ROOT / TIPR), opts, rgb.gallery, str(index_dir))
    assert sorted(os.listdir(index_dir)) == ["identity.json", "index.faiss", "items.json"]
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []


def test_an_index_mixing_two_builds_is_refused(rgb, tmp_path, capsys):
    _, other = build_model_from(TIPR, "MODEL.HEADS.NUM_CLASSES", "7", "MODEL.CLIP.NAME", "tiny-vit")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05)
    weights = save_checkpoint(other, tmp_path / "other.pth")
    other_index = tmp_path / "other"
    build_index(str(ROOT / TIPR), OPTS + ["MODEL.WEIGHTS", weights], rgb.gallery, str(other_index))
    search = load_tool("search")
    capsys.readouterr()
    for name in ("index.faiss", "items.json"):
        mixed = tmp_path / f"mixed_{name}"
        shutil.copytree(rgb.index, mixed)
        shutil.copy(other_index / name, mixed / name)  # same gallery, same size: only ids differ
        with pytest.raises(IndexError_, match=f"mixes files of different builds \\({name} not"):
            SearchIndex.load(str(mixed))
        assert search.main(["--index", str(mixed), QUERY, "--picture", ""]) == 1
        message, out = one_line_error(capsys)
        assert "rebuild the index with tools/build_index.py" in message and out == ""


def test_an_interrupted_build_leaves_the_previous_index(rgb, tmp_path, monkeypatch):
    import plugins.search.index as index_module

    index_dir = tmp_path / "index"
    shutil.copytree(rgb.index, index_dir)
    before = {n: (index_dir / n).read_bytes() for n in os.listdir(index_dir)}

    def killed_mid_write(index, path):
        with open(path, "wb") as f:
            f.write(b"IxFI half an index")
        raise KeyboardInterrupt

    monkeypatch.setattr(index_module.faiss, "write_index", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        build_index(
            str(ROOT / TIPR), OPTS + ["MODEL.WEIGHTS", rgb.weights], rgb.gallery, str(index_dir)
        )
    monkeypatch.undo()
    # The folder as it was (besides the lock file the build held, as training leaves one).
    assert {
        n: (index_dir / n).read_bytes() for n in os.listdir(index_dir) if n != ".lock"
    } == before
    assert [p for p in os.listdir(tmp_path) if p != "index"] == []  # no staging folder left
    assert len(TextSearcher(str(index_dir)).search(QUERY, 3)) == 3


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: a refusal must come before it."""
    import plugins.search.engine as engine

    def load_model(cfg):
        raise AssertionError("the model was loaded before the refusal")

    monkeypatch.setattr(engine, "load_model", load_model)


BUILD_REFUSALS = {
    "missing recall queries": (
        ["--recall-queries", "{tmp}/none.txt"],
        "--recall-queries {tmp}/none.txt: No such file or directory: pass a text file of "
        "sentences, one per line.",
    ),
    "non-UTF-8 recall queries": (
        ["--recall-queries", "{tmp}/latin1.txt"],
        "--recall-queries {tmp}/latin1.txt is not UTF-8 text (byte 0xe8 at offset 32): save it "
        "as UTF-8, one sentence per line.",
    ),
    "negative workers": (
        ["--num-workers", "-1"],
        "--num-workers -1: pass 0 (read images in this process) or a number of image-reading "
        "processes.",
    ),
    "empty batches": (["--batch-size", "0"], "--batch-size 0: pass 1 or more images per batch."),
    "out below a file": (
        ["--out", "{tmp}/file/index"],
        "--out {tmp}/file/index cannot be created: {tmp}/file is a file, not a folder; pass a "
        "folder path.",
    ),
    "out on a read-only file system": (
        ["--out", "{tmp}/read_only/index"],
        "--out {tmp}/read_only/index cannot be written ({tmp}/read_only is read-only or not "
        "yours): pass a folder you can write to.",
    ),
    "out holding other files": (
        ["--out", "{tmp}/crowded"],
        "--out {tmp}/crowded holds files this tool did not write (model_final.pth) and the "
        "folder is replaced whole: pass a new or empty folder, or one this tool wrote before.",
    ),
}


@pytest.mark.parametrize("case", sorted(BUILD_REFUSALS))
def test_build_refusals_come_first_in_one_line(case, rgb, tmp_path, capsys, no_model, monkeypatch):
    (tmp_path / "latin1.txt").write_bytes(
        "a man in a red coat\nune femme très élégante\n".encode("latin-1")
    )
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "crowded").mkdir()
    (tmp_path / "crowded" / "model_final.pth").write_text("not an index file")
    read_only = str(tmp_path / "read_only")
    os.mkdir(read_only)
    real_access = os.access  # a read-only file system: refused to root as well
    monkeypatch.setattr(
        os, "access", lambda p, m, **kw: False if str(p) == read_only else real_access(p, m, **kw)
    )
    args, expected = BUILD_REFUSALS[case]
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    argv = ["--config-file", str(ROOT / TIPR), "MODEL.WEIGHTS", rgb.weights, *OPTS, "--gallery"]
    argv += [rgb.gallery, "--approx", "hnsw", "--out", str(tmp_path / "index"), *args]
    assert load_tool("build_index").main(argv) == 1
    message, _ = one_line_error(capsys)
    assert message == expected.replace("{tmp}", str(tmp_path))
    assert not os.path.exists(tmp_path / "index")
    assert os.listdir(tmp_path / "crowded") == ["model_final.pth"]


def test_a_corrupt_image_read_by_workers_is_one_line(rgb, tmp_path, capsys):
    gallery = copy_gallery(rgb, tmp_path / "g")
    bad = os.path.join(gallery, "b", "broken.png")
    with open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n truncated")
    tool = load_tool("build_index")
    argv = ["--config-file", str(ROOT / TIPR), "MODEL.WEIGHTS", rgb.weights, *OPTS]
    argv += ["--gallery", gallery, "--out", str(tmp_path / "index"), "--num-workers", "2"]
    assert tool.main(argv) == 1
    message, _ = one_line_error(capsys)
    assert message.startswith(f"cannot read gallery image {bad}: "), message
    assert message.endswith("replace that file with a readable image, or move it out of the "
                            "gallery, and build the index again.")  # fmt: skip
    assert "dataset_stats" not in message and len(message) < 400, message
    assert not os.path.exists(tmp_path / "index")


def test_an_unknown_device_is_one_line(rgb, capsys):
    assert load_tool("search").main(["--index", rgb.index, QUERY, "--device", "tpu"]) == 1
    message, _ = one_line_error(capsys)
    assert (
        message == "--device tpu: not a device the search runs on; pass cpu, cuda, cuda:N or auto."
    )


def test_a_picture_that_cannot_be_written_is_refused_before_the_search(rgb, tmp_path, capsys):
    missing = str(tmp_path / "no_folder" / "ranked.png")
    assert load_tool("search").main(["--index", rgb.index, QUERY, "--picture", missing]) == 1
    message, out = one_line_error(capsys)
    assert message.startswith(f"--picture {missing} cannot be written") and out == ""


def test_a_read_only_index_draws_its_picture_elsewhere(rgb, tmp_path, capsys, monkeypatch):
    index_dir = tmp_path / "shared_index"
    shutil.copytree(rgb.index, index_dir)
    real_access = os.access  # a read-only file system: refused to root as well

    def access(path, mode, **kwargs):
        if mode & os.W_OK and os.path.abspath(path).startswith(str(index_dir)):
            return False
        return real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    search = load_tool("search")
    monkeypatch.setattr(search.tempfile, "gettempdir", lambda: str(tmp_path))
    assert search.main(["--index", str(index_dir), QUERY, "--top-k", "2"]) == 0
    captured = capsys.readouterr()
    elsewhere = str(tmp_path / "last_query.png")
    # Said before the search, on the first line.
    assert captured.err.splitlines()[0] == (
        f"the index folder {index_dir} is read-only: the picture goes to {elsewhere} "
        "(--picture chooses another place)"
    )
    assert len(captured.out.splitlines()) == 2 and os.path.getsize(elsewhere) > 0
    assert not os.path.exists(index_dir / "last_query.png")


def test_an_index_inside_its_gallery_is_never_indexed(rgb, tmp_path):
    gallery = copy_gallery(rgb, tmp_path / "g")
    index_dir = os.path.join(gallery, "index")
    opts = OPTS + ["MODEL.WEIGHTS", rgb.weights]
    lines = []
    for _ in range(2):  # the second build finds the first's index and its picture
        build_index(str(ROOT / TIPR), opts, gallery, index_dir, echo=lines.append)
        write_image(os.path.join(index_dir, "last_query.png"), size=(64, 32))
        assert [item.name for item in SearchIndex.load(index_dir).items] == GALLERY_ORDER
    assert (
        f"the index folder {index_dir} is inside the gallery {gallery}: it is not indexed." in lines
    )
    # An index folder elsewhere in the gallery is not indexed either.
    shutil.copytree(index_dir, os.path.join(gallery, "c", "old_index"))
    assert [item.name for item in list_gallery(gallery)] == GALLERY_ORDER


def test_search_batch_answers_each_query_as_search_does(rgb):
    searcher = TextSearcher(rgb.index)
    texts = [QUERY, "man", "a person in white shoes carrying a large black backpack", QUERY]
    ks = [3, 7, 1, 5]
    batch = searcher.search_batch(texts, ks)
    for text, k, results in zip(texts, ks, batch):
        alone = searcher.search(text, k)
        assert [r["index"] for r in results] == [r["index"] for r in alone]
        np.testing.assert_allclose(
            [r["score"] for r in results], [r["score"] for r in alone], atol=1e-5
        )
    assert [len(r) for r in searcher.search_batch(texts, 2)] == [2, 2, 2, 2]
    with pytest.raises(SearchError, match="the query is empty"):
        searcher.search_batch([QUERY, " "], 3)


def test_config_overrides_are_checked_in_one_place(capsys):
    from plugins.engine.defaults import plugin_argument_parser

    expected = "the config overrides must be KEY VALUE pairs, but 3 words were given (A 1 B): a KEY lacks its VALUE."
    with pytest.raises(SystemExit):
        plugin_argument_parser().parse_args(["--config-file", "c.yml", "A", "1", "B"])
    assert capsys.readouterr().err.strip().endswith(expected)
    for tool, extra in (("build_index", ["--gallery", "g"]), ("export_onnx", [])):
        with pytest.raises(SystemExit) as e:
            load_tool(tool).parse_args(
                ["--config-file", "c.yml", "A", "1", "--out", "o", "B", *extra]
            )
        assert e.value.code == 2
        assert capsys.readouterr().err.strip().endswith(expected), tool
