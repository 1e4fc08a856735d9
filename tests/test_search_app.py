"""The search page's server (``plugins/search/app.py``, ``tools/search_app.py``) over real HTTP.

Most tests start the server on a free port in a thread with a stand-in searcher: an object with
``search(text, top_k)`` returning the documented result dicts over small image files written to
``tmp_path``, and ``has_identities``. The last test builds a real index with
``tools/build_index.py`` and queries it through ``tools/search_app.py``.
"""

import contextlib
import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser
from typing import NamedTuple

import pytest
from PIL import Image

from plugins.search.app import K_MAX, make_server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEARCH_APP = os.path.join(ROOT, "tools", "search_app.py")
BUILD_INDEX = os.path.join(ROOT, "tools", "build_index.py")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Item(NamedTuple):
    """The fields of ``plugins.search.gallery.GalleryItem`` the server reads."""

    path: str
    t_path: str = ""
    pid: int = -1
    name: str = ""


class StandInSearcher:
    """Ranks a fixed gallery by fixed scores (ties: lower index first), whatever the text.

    ``raises`` is raised by every search instead; ``list_items`` exposes the gallery as
    ``items`` (as a searcher with a gallery list does) or hides it.
    """

    def __init__(self, items, scores, has_identities, raises=None, list_items=True):
        self._items = items
        self.scores = scores
        self.has_identities = has_identities
        self.raises = raises
        self.calls = []
        if list_items:
            self.items = items

    def search(self, text, top_k=10):
        self.calls.append((text, top_k))
        if self.raises is not None:
            raise self.raises
        order = sorted(range(len(self._items)), key=lambda i: (-self.scores[i], i))[:top_k]
        return [
            {
                "rank": rank,
                "score": self.scores[i],
                "name": self._items[i].name,
                "path": self._items[i].path,
                "t_path": self._items[i].t_path,
                "pid": self._items[i].pid,
                "index": i,
            }
            for rank, i in enumerate(order, 1)
        ]


# Gallery order 0..3; by score the ranking is 0 (0.9), 3 (0.7), 2 (0.5), 1 (0.1).
SCORES = [0.9, 0.1, 0.5, 0.7]
PIDS = [7, 3, 7, 5]
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]


def write_gallery(root, pairs=False, pids=True):
    """Four 8x16 images (RGB/ and, with ``pairs``, T/ with the same names)."""
    items = []
    for i, colour in enumerate(COLOURS):
        name = f"p{i}.png"
        path = os.path.join(root, "RGB", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.new("RGB", (8, 16), colour).save(path)
        t_path = ""
        if pairs:
            t_path = os.path.join(root, "T", name)
            os.makedirs(os.path.dirname(t_path), exist_ok=True)
            Image.new("L", (8, 16), 40 * i + 20).save(t_path)
        items.append(Item(path, t_path, PIDS[i] if pids else -1, name))
    return items


@contextlib.contextmanager
def serving(searcher):
    """The server on 127.0.0.1 and a free port, answering in a thread; yields its base URL."""
    server = make_server(searcher, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def get(url):
    """GET ``url``; returns (status, headers, body bytes), also for error statuses."""
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers, e.read()


def get_json(url):
    status, headers, body = get(url)
    assert headers["Content-Type"] == "application/json", body[:200]
    return status, json.loads(body)


@pytest.fixture
def person_gallery(tmp_path):
    """A dataset-like gallery: identities, no thermal images."""
    return write_gallery(str(tmp_path / "gallery"))


@pytest.fixture
def pair_gallery(tmp_path):
    """A folder of RGB + thermal pairs without identities."""
    return write_gallery(str(tmp_path / "pairs"), pairs=True, pids=False)


def page_config(html):
    match = re.search(r'<script type="application/json" id="config">(.*?)</script>', html, re.S)
    assert match, html[:500]
    return json.loads(match.group(1))


def test_page_is_one_self_contained_document(person_gallery):
    with serving(StandInSearcher(person_gallery, SCORES, has_identities=True)) as url:
        status, headers, body = get(url)
    html = body.decode("utf-8")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    # The controls: a text box, a 1-50 slider starting at 10, a button and the identity field.
    for control in ('id="q" type="text"', 'id="k" type="range"', "<button", 'id="pid"'):
        assert control in html
    assert page_config(html) == {
        "has_identities": True,
        "count": 4,
        "pairs": False,
        "k_min": 1,
        "k_max": 50,
        "k_default": 10,
    }
    # Nothing is loaded from elsewhere: no absolute URL, no external script, style or image.
    assert not re.search(r"(https?:)?//[\w.-]+\.\w", html.replace("<!DOCTYPE html>", ""))
    assert not re.search(r'<(script|link|img)[^>]*\b(src|href)="(?!data:)', html)
    assert "default-src 'none'" in headers["Content-Security-Policy"]


def test_page_config_says_when_there_are_no_identities(pair_gallery):
    searcher = StandInSearcher(pair_gallery, SCORES, has_identities=False, list_items=False)
    with serving(searcher) as url:
        _, _, body = get(url)
    config = page_config(body.decode("utf-8"))
    assert config["has_identities"] is False
    # A searcher that does not list its gallery: size and kind unknown until results come.
    assert config["count"] is None and config["pairs"] is None


def test_search_returns_ranked_results(person_gallery):
    searcher = StandInSearcher(person_gallery, SCORES, has_identities=True)
    with serving(searcher) as url:
        status, data = get_json(url + "api/search?q=++a%20man%20in%20red+&k=3")
    assert status == 200
    assert searcher.calls == [("a man in red", 3)]  # stripped text, k as given
    assert data["query"] == "a man in red"
    assert data["k"] == 3
    assert isinstance(data["elapsed_ms"], float) and data["elapsed_ms"] >= 0
    assert data["results"] == [
        {"rank": 1, "score": 0.9, "name": "p0.png", "index": 0, "pid": 7,
         "image": "image/0", "t_image": None},
        {"rank": 2, "score": 0.7, "name": "p3.png", "index": 3, "pid": 5,
         "image": "image/3", "t_image": None},
        {"rank": 3, "score": 0.5, "name": "p2.png", "index": 2, "pid": 7,
         "image": "image/2", "t_image": None},
    ]  # fmt: skip


def test_default_k_is_ten_and_never_exceeds_the_gallery(person_gallery):
    searcher = StandInSearcher(person_gallery, SCORES, has_identities=True)
    with serving(searcher) as url:
        status, data = get_json(url + "api/search?q=someone")
    assert status == 200 and data["k"] == 10
    assert searcher.calls == [("someone", 4)]  # 10 asked, 4 in the gallery
    assert [r["index"] for r in data["results"]] == [0, 3, 2, 1]


def test_identity_marks_matches(person_gallery):
    with serving(StandInSearcher(person_gallery, SCORES, has_identities=True)) as url:
        status, data = get_json(url + "api/search?q=a+woman&k=4&pid=7")
    assert status == 200
    # Ranked 0, 3, 2, 1 with pids 7, 5, 7, 3.
    assert [(r["index"], r["match"]) for r in data["results"]] == [
        (0, True),
        (3, False),
        (2, True),
        (1, False),
    ]


def test_pairs_link_their_thermal_image(pair_gallery):
    with serving(StandInSearcher(pair_gallery, SCORES, has_identities=False)) as url:
        status, data = get_json(url + "api/search?q=x&k=2")
        first = data["results"][0]
        _, headers, thermal = get(url + first["t_image"])
        _, _, rgb = get(url + first["image"])
    assert status == 200
    assert [(r["image"], r["t_image"]) for r in data["results"]] == [
        ("image/0", "image/0?thermal=1"),
        ("image/3", "image/3?thermal=1"),
    ]
    assert "match" not in first and first["pid"] == -1
    assert headers["Content-Type"] == "image/png"
    with open(pair_gallery[0].t_path, "rb") as f:
        assert thermal == f.read()
    with open(pair_gallery[0].path, "rb") as f:
        assert rgb == f.read()
    assert thermal != rgb


@pytest.mark.parametrize(
    "query, message",
    [
        ("", "q is empty"),
        ("q=", "q is empty"),
        ("q=+%20+", "q is empty"),
        ("q=x&q=y", "q is given 2 times"),
        ("q=x&k=0", "k must be an integer from 1 to 50, got 0"),
        (f"q=x&k={K_MAX + 1}", "k must be an integer from 1 to 50, got 51"),
        ("q=x&k=-3", "got -3"),
        ("q=x&k=abc", "k must be an integer from 1 to 50, got 'abc'"),
        ("q=x&k=2.5", "got '2.5'"),
        ("q=x&pid=seven", "pid must be an integer identity, got 'seven'"),
        ("q=" + "a" * 1001, "q has 1001 characters; at most 1000"),
    ],
)
def test_bad_search_requests_are_400_with_one_line(person_gallery, query, message):
    searcher = StandInSearcher(person_gallery, SCORES, has_identities=True)
    with serving(searcher) as url:
        status, data = get_json(url + "api/search?" + query)
    assert status == 400
    assert list(data) == ["error"]
    assert message in data["error"] and "\n" not in data["error"]
    assert searcher.calls == []


def test_identity_is_refused_without_identities(pair_gallery):
    searcher = StandInSearcher(pair_gallery, SCORES, has_identities=False)
    with serving(searcher) as url:
        status, data = get_json(url + "api/search?q=x&pid=3")
        empty_status, _ = get_json(url + "api/search?q=x&pid=")  # an empty field is no pid
    assert status == 400 and "no identities" in data["error"]
    assert empty_status == 200


def test_searcher_refusal_is_400_and_failure_500(person_gallery):
    refusing = StandInSearcher(
        person_gallery, SCORES, True, raises=ValueError("the query has no words\nafter cleaning")
    )
    with serving(refusing) as url:
        status, data = get_json(url + "api/search?q=...")
    assert (status, data) == (400, {"error": "the query has no words after cleaning"})
    failing = StandInSearcher(person_gallery, SCORES, True, raises=RuntimeError("out of memory"))
    with serving(failing) as url:
        status, data = get_json(url + "api/search?q=x")
        page_status, _, _ = get(url)  # the server keeps answering
    assert (status, data) == (500, {"error": "internal error: out of memory"})
    assert page_status == 200


def test_image_serves_gallery_files_only(person_gallery, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not a gallery file")
    with serving(StandInSearcher(person_gallery, SCORES, has_identities=True)) as url:
        status, headers, body = get(url + "image/0")
        status_3, _, body_3 = get(url + "image/3")  # served without a search first
        missing = {
            path: get_json(url + path)
            for path in [
                "image/4",
                "image/-1",
                "image/+1",
                "image/abc",
                "image/",
                "image/0?thermal=1",  # no thermal images in this gallery
                "image/..%2F..%2Fsecret.txt",
                "image/" + str(secret),
                "secret.txt",
                "image/" + "9" * 5000,  # int() refuses more than 4300 digits
            ]
        }
    with open(person_gallery[0].path, "rb") as f:
        assert (status, body) == (200, f.read())
    assert headers["Content-Type"] == "image/png"
    assert headers["Content-Length"] == str(len(body))
    with open(person_gallery[3].path, "rb") as f:
        assert (status_3, body_3) == (200, f.read())
    for path, (status, data) in missing.items():
        assert status == 404, path
        # One line, and no gallery path revealed (the request's own text may be echoed).
        assert "\n" not in data["error"], path
        assert os.path.dirname(person_gallery[0].path) not in data["error"], path


def test_an_index_of_thousands_of_digits_is_404(person_gallery):
    with serving(StandInSearcher(person_gallery, SCORES, has_identities=True)) as url:
        status, data = get_json(url + "image/" + "5" * 5000)
    assert status == 404, data
    assert data == {"error": "no such gallery image: '5555555555555555555555555555555555555555'"
                    "... (5000 characters) is not an index"}  # fmt: skip


class BatchingSearcher(StandInSearcher):
    """A stand-in whose ranking depends on the text (``"q<i>"`` ranks item i % 4 first) and
    that answers ``search_batch`` too, recording each batch; its first search waits until
    ``release`` is set, so that the requests sent meanwhile pile up behind it."""

    def __init__(self, items):
        super().__init__(items, SCORES, has_identities=True)
        self.batches = []
        self.release = threading.Event()

    def ranking(self, text):
        if not self.release.is_set():
            self.release.wait(timeout=30)
        if text == "boom":
            raise ValueError("boom is not a description")
        first = int(text[1:]) % len(self._items)
        return [first] + [i for i in range(len(self._items)) if i != first]

    def search(self, text, top_k=10):
        self.calls.append((text, top_k))
        return self._results(self.ranking(text)[:top_k])

    def search_batch(self, texts, top_ks):
        self.batches.append(list(texts))
        return [self._results(self.ranking(t)[:k]) for t, k in zip(texts, top_ks)]

    def _results(self, order):
        return [
            {"rank": r, "score": 1.0 / r, "name": self._items[i].name, "path": self._items[i].path,
             "t_path": "", "pid": self._items[i].pid, "index": i}
            for r, i in enumerate(order, 1)
        ]  # fmt: skip


def ask_together(url, searcher, queries):
    """Send ``queries`` at once while the searcher holds its first search; their answers."""
    answers = {}

    def ask(text):
        answers[text] = get_json(url + f"api/search?q={text}&k={1 + len(text) % 3}")

    threads = [threading.Thread(target=ask, args=(q,)) for q in queries]
    threads[0].start()
    deadline = time.monotonic() + 30
    while not (searcher.calls or searcher.batches) and time.monotonic() < deadline:
        time.sleep(0.01)  # the first request is being answered, alone
    for thread in threads[1:]:
        thread.start()
    time.sleep(0.5)  # the others wait behind it
    searcher.release.set()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(answers) == sorted(queries)
    return answers


def assert_answered(text, answer):
    status, data = answer
    assert status == 200, data
    assert data["query"] == text and data["k"] == 1 + len(text) % 3
    assert len(data["results"]) == data["k"]
    assert data["results"][0]["index"] == int(text[1:]) % 4, (text, data)


def test_the_listen_queue_holds_a_burst_of_connections(person_gallery):
    server = make_server(StandInSearcher(person_gallery, SCORES, True), "127.0.0.1", 0)
    try:
        assert server.request_queue_size >= 128  # socketserver's default of 5 drops a burst
    finally:
        server.server_close()


def test_concurrent_requests_are_batched_and_each_answered_correctly(person_gallery):
    searcher = BatchingSearcher(person_gallery)
    queries = [f"q{i}" for i in range(24)]
    with serving(searcher) as url:
        answers = ask_together(url, searcher, queries)
    for text in queries:
        assert_answered(text, answers[text])
    # The first alone, the 23 that came meanwhile in one pass.
    assert searcher.calls == [("q0", 3)]
    assert sorted(searcher.batches[0]) == sorted(queries[1:]) and len(searcher.batches) == 1
    assert sorted(answers[q][1]["batch"] for q in queries) == [1] + [23] * 23


def test_a_refused_query_in_a_batch_fails_alone(person_gallery):
    searcher = BatchingSearcher(person_gallery)
    queries = ["q0", "q5", "boom", "q6", "q7"]
    with serving(searcher) as url:
        answers = ask_together(url, searcher, queries)
    assert answers["boom"] == (400, {"error": "boom is not a description"})
    for text in queries:
        if text != "boom":
            assert_answered(text, answers[text])
    assert len(searcher.batches) == 1 and sorted(searcher.batches[0]) == sorted(queries[1:])


def test_image_of_a_deleted_file_is_404_without_its_path(person_gallery):
    os.remove(person_gallery[1].path)
    with serving(StandInSearcher(person_gallery, SCORES, has_identities=True)) as url:
        status, data = get_json(url + "image/1")
    assert status == 404
    assert data == {"error": "gallery item 1 cannot be read on the server"}


def test_without_a_gallery_list_only_returned_results_are_served(person_gallery):
    searcher = StandInSearcher(person_gallery, SCORES, has_identities=True, list_items=False)
    with serving(searcher) as url:
        before, _, _ = get(url + "image/3")
        get_json(url + "api/search?q=x&k=2")  # returns 0 and 3
        after, _, body = get(url + "image/3")
        never, _, _ = get(url + "image/1")
    assert before == 404 and never == 404
    with open(person_gallery[3].path, "rb") as f:
        assert (after, body) == (200, f.read())


def test_one_log_line_per_request(person_gallery, caplog):
    with caplog.at_level(logging.INFO, logger="plugins.search.app"):
        with serving(StandInSearcher(person_gallery, SCORES, has_identities=True)) as url:
            get(url)
            get(url + "api/search?q=a+man&k=2")
            get(url + "api/search?k=2")
            get(url + "image/9")
    lines = [r.getMessage() for r in caplog.records if r.name == "plugins.search.app"]
    assert len(lines) == 4, lines
    for line, (path, code) in zip(
        lines, [("/", 200), ("/api/search?q=a+man&k=2", 200), ("/api/search?k=2", 400),
                ("/image/9", 404)]
    ):  # fmt: skip
        assert re.fullmatch(rf'127\.0\.0\.1 "GET {re.escape(path)}" {code} [\d.]+ ms', line), line


class _Dom(HTMLParser):
    """The cards, the identity field's box and the status line of a rendered page."""

    def __init__(self):
        super().__init__()
        self.cards, self.pid_hidden, self.status, self.info = [], None, "", ""
        self._text_of = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "div" and "card" in classes:
            self.cards.append({"classes": classes, "images": []})
        elif tag == "img" and self.cards:
            self.cards[-1]["images"].append(attrs["src"])
        elif attrs.get("id") == "pidbox":
            self.pid_hidden = "hidden" in attrs
        elif attrs.get("id") in ("status", "info"):
            self._text_of = attrs["id"]

    def handle_data(self, data):
        if self._text_of:
            setattr(self, self._text_of, getattr(self, self._text_of) + data)

    def handle_endtag(self, tag):
        self._text_of = None


def rendered(url, tmp_path):
    """The page at ``url`` after its scripts ran, parsed from headless Chromium's DOM dump."""
    cmd = [
        CHROMIUM, "--headless", "--disable-gpu", "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=5000",
        "--dump-dom", url,
    ]  # fmt: skip
    if os.geteuid() == 0:  # Chromium's sandbox refuses root
        cmd.insert(1, "--no-sandbox")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dom = _Dom()
    dom.feed(proc.stdout)
    return dom


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH to run the page's script")
def test_page_script_renders_a_search_from_its_url(person_gallery, pair_gallery, tmp_path):
    with serving(StandInSearcher(person_gallery, SCORES, has_identities=True)) as url:
        people = rendered(url + "?q=someone&k=3&pid=7", tmp_path)
    # Ranked 0, 3, 2 with pids 7, 5, 7: green, red, green.
    assert [(c["classes"], c["images"]) for c in people.cards] == [
        (["card", "match"], ["image/0"]),
        (["card", "miss"], ["image/3"]),
        (["card", "match"], ["image/2"]),
    ]
    assert people.pid_hidden is False
    assert "3 results" in people.status and "identity 7: 2 of 3" in people.status
    assert people.info == "4 gallery images, with identities"

    with serving(StandInSearcher(pair_gallery, SCORES, has_identities=False)) as url:
        pairs = rendered(url + "?q=someone&k=2", tmp_path)
    assert [(c["classes"], c["images"]) for c in pairs.cards] == [
        (["card"], ["image/0", "image/0?thermal=1"]),
        (["card"], ["image/3", "image/3?thermal=1"]),
    ]
    assert pairs.pid_hidden is True
    assert pairs.info == "4 RGB + thermal pairs"

    with serving(StandInSearcher(person_gallery, SCORES, has_identities=True)) as url:
        unreadable_k = rendered(url + "?q=someone&k=abc", tmp_path)
        refused = rendered(url + "?q=" + "a" * 1001, tmp_path)
        empty = rendered(url, tmp_path)
    # A k the page cannot read keeps the default 10: the whole gallery of 4.
    assert len(unreadable_k.cards) == 4 and "4 results" in unreadable_k.status
    # The server's refusal is shown as it is.
    assert refused.cards == [] and "at most 1000 are accepted" in refused.status
    assert empty.cards == [] and empty.status == ""


def test_help_warns_that_other_hosts_expose_the_gallery():
    proc = subprocess.run(
        [sys.executable, SEARCH_APP, "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "--index DIR" in text and "--port PORT" in text
    assert "exposes the search and every gallery image to the network" in text


# --- the real searcher -----------------------------------------------------------------------


class _Lines:
    """Every line of a pipe, read by a thread (so that waiting for one never blocks the test)."""

    def __init__(self, pipe):
        self.lines, self._new = [], threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe):
        for line in pipe:
            with self._new:
                self.lines.append(line)
                self._new.notify_all()
        with self._new:
            self.lines.append(None)  # end of the stream
            self._new.notify_all()

    def wait_for(self, pattern, timeout):
        """The first match of ``pattern`` in a line; fails the test at the end or timeout."""
        deadline, seen = time.monotonic() + timeout, 0
        with self._new:
            while time.monotonic() < deadline:
                for line in self.lines[seen:]:
                    if line is None:
                        deadline = 0
                        break
                    match = re.search(pattern, line)
                    if match:
                        return match
                seen = len(self.lines)
                self._new.wait(timeout=1.0)
        pytest.fail(f"no line matched {pattern!r}:\n{self.text()[-3000:]}")

    def text(self, wait=False):
        """Everything read so far (``wait``: up to the end of the stream, at most 30 s)."""
        if wait:
            self._thread.join(timeout=30)
        with self._new:
            return "".join(line for line in self.lines if line)


@pytest.mark.skipif(
    importlib.util.find_spec("plugins.search.engine") is None or not os.path.isfile(BUILD_INDEX),
    reason="plugins.search.engine or tools/build_index.py is not there yet",
)
def test_real_index_through_the_command_line(tmp_path):
    import torch

    from tests.fixtures_model import TINY_CLIP, build_model_from

    config = "configs/Demo/tipr_clip_sdm.yml"
    # An identity classifier too, as a trained checkpoint has: the index skips it.
    _, model = build_model_from(config, "MODEL.HEADS.NUM_CLASSES", "3")
    weights = str(tmp_path / "model.pth")
    torch.save({"model": model.state_dict()}, weights)
    gallery = write_gallery(str(tmp_path / "gallery"))
    index_dir = str(tmp_path / "index")
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    build = subprocess.run(
        [sys.executable, BUILD_INDEX, "--config-file", os.path.join(ROOT, config),
         "--gallery", str(tmp_path / "gallery" / "RGB"), "--out", index_dir,
         "MODEL.WEIGHTS", weights, *TINY_CLIP],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=env,
    )  # fmt: skip
    assert build.returncode == 0, (build.stdout + build.stderr)[-5000:]

    # The same search in this process, for the server's answers to be compared with.
    from plugins.search.engine import TextSearcher

    text = "a man in a red coat"
    expected = TextSearcher(index_dir).search(text, 3)

    proc = subprocess.Popen(
        [sys.executable, SEARCH_APP, "--index", index_dir, "--port", "0"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT, env=env,
    )  # fmt: skip
    stderr = _Lines(proc.stderr)
    try:
        url = stderr.wait_for(r"on (http://\S+/) \(Ctrl-C stops\)", timeout=300).group(1)
        status, data = get_json(url + "api/search?q=" + text.replace(" ", "+") + "&k=3")
        assert status == 200, data
        results = data["results"]
        assert [(r["rank"], r["index"], r["name"], r["pid"]) for r in results] == [
            (e["rank"], e["index"], e["name"], -1) for e in expected
        ]
        assert [r["score"] for r in results] == pytest.approx(
            [e["score"] for e in expected], abs=1e-5
        )
        # Every result's image is the gallery file of that name.
        names = {item.name: item for item in gallery}
        for r in results:
            status, _, body = get(url + r["image"])
            with open(names[r["name"]].path, "rb") as f:
                assert (status, body) == (200, f.read()), r
        status, data = get_json(url + "api/search?q=x&pid=1")  # a folder has no identities
        assert status == 400, data
        status, data = get_json(url + "api/search?q=+")
        assert status == 400, data
        # The requests' lines, one each.
        stderr.wait_for(r'"GET /api/search\?q=\+" 400 ', timeout=30)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)  # every thread's stack, to say where it hangs
            time.sleep(3)
            proc.kill()
            pytest.fail("no exit 60 s after Ctrl-C:\n" + stderr.text(wait=True)[-6000:])
    assert proc.returncode == 0, stderr.text(wait=True)[-3000:]
    assert "Stopped." in stderr.text(wait=True)
