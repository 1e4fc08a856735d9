"""A small search page for a text person-search index, served by Python's standard library.

``make_server(searcher, host, port)`` returns a ``ThreadingHTTPServer`` answering:

- ``GET /``: one self-contained HTML page (inline CSS and JS, no external assets): a text box, a
  top-k slider (1-50), a search button, the ranked gallery as thumbnails with rank and score (RGB
  and thermal side by side for pair galleries) and, when the gallery has identities, an identity
  field that draws matches green and non-matches red. ``/?q=...&k=8`` runs that query on load.
- ``GET /api/search?q=TEXT&k=10[&pid=N]``: ``{"query", "k", "results": [{"rank", "score",
  "name", "index", "pid", "image", "t_image"[, "match"]}, ...], "elapsed_ms", "batch"}``;
  bad input is HTTP 400 with ``{"error": "<one line>"}``. ``batch`` is how many searches
  (this one included) ran together through the text encoder.
- ``GET /image/<index>[?thermal=1]``: the bytes of a gallery image of the index, 404 otherwise.
  Only files the searcher lists (its gallery items) or returned in a result are ever read, never
  a path taken from the request.

``searcher`` is anything with ``search(text, top_k) -> list[dict]`` (the dicts of
``plugins.search.engine.TextSearcher.search``) and ``has_identities``; refusals it raises as
``ValueError`` (``SearchError`` is one) become HTTP 400 with their message. A searcher that also
has ``search_batch(texts, top_ks) -> list[list[dict]]`` (``TextSearcher`` has) answers requests
that arrive together in one pass (``QueryBatcher``): while one batch runs, the requests that
come in wait and then run as the next batch, so a lone request never waits for company. This
module imports only the standard library: the model lives in the searcher.

The listening socket queues up to ``SearchServer.request_queue_size`` connections (Python's
default of 5 drops the rest of a burst, and their clients retry after a second or more).
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import socket
import threading
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

logger = logging.getLogger(__name__)

K_MIN, K_MAX, K_DEFAULT = 1, 50, 10
# Searches of concurrent requests run through the text encoder together, at most this many.
MAX_BATCH = 64
# Connections the kernel queues before the server accepts them (capped by net.core.somaxconn).
REQUEST_QUEUE_SIZE = 1024
# /image/<index>: more digits than any gallery needs is no index (int() of thousands of digits
# raises ValueError).
MAX_INDEX_DIGITS = 18
# A caption is a sentence or two; the tokenizer truncates far below this anyway.
MAX_QUERY_CHARS = 1000


class BadRequest(ValueError):
    """A request the API refuses (HTTP 400); ``str(e)`` is one line."""


def _one_line(text):
    return " ".join(str(text).split()) or "error"


def _shown(text, limit=40):
    """``repr(text)``, cut to ``limit`` characters (a request may carry thousands)."""
    return (
        repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"
    )


def gallery_items(searcher):
    """The searcher's gallery items (``GalleryItem``-like: ``path``, ``t_path``), or None.

    ``TextSearcher`` exposes them as ``items`` (as its ``index.items`` too); a searcher with
    neither is served only the images its results returned.
    """
    for owner in (searcher, getattr(searcher, "index", None)):
        items = getattr(owner, "items", None)
        if items is not None:
            return items
    return None


def parse_search_query(query_string, has_identities):
    """Validate ``q``, ``k`` and ``pid`` of an ``/api/search`` query string.

    Returns:
        tuple: (text (str, stripped), k (int), pid (int | None)).
    Raises:
        BadRequest: one line naming the parameter and what is accepted.
    """
    params = parse_qs(query_string, keep_blank_values=True)

    def single(name):
        values = params.get(name, [])
        if len(values) > 1:
            raise BadRequest(f"{name} is given {len(values)} times; give it once")
        return values[0] if values else None

    text = (single("q") or "").strip()
    if not text:
        raise BadRequest("q is empty: describe the person, e.g. q=a woman in a red coat")
    if len(text) > MAX_QUERY_CHARS:
        raise BadRequest(f"q has {len(text)} characters; at most {MAX_QUERY_CHARS} are accepted")
    k_text = single("k")
    if k_text is None or not k_text.strip():
        k = K_DEFAULT
    else:
        try:
            k = int(k_text.strip())
        except ValueError:
            raise BadRequest(
                f"k must be an integer from {K_MIN} to {K_MAX}, got {k_text!r}"
            ) from None
        if not K_MIN <= k <= K_MAX:
            raise BadRequest(f"k must be an integer from {K_MIN} to {K_MAX}, got {k}")
    pid_text = single("pid")
    pid = None
    if pid_text is not None and pid_text.strip():
        if not has_identities:
            raise BadRequest(
                "pid is given but this gallery has no identities (only a dataset split has "
                "them): leave pid out"
            )
        try:
            pid = int(pid_text.strip())
        except ValueError:
            raise BadRequest(f"pid must be an integer identity, got {pid_text!r}") from None
    return text, k, pid


class _Job:
    """One request's search in a ``QueryBatcher``: its input, then its result or error."""

    __slots__ = ("request", "done", "value", "error", "batch")

    def __init__(self, request):
        self.request = request
        self.done = False
        self.value = self.error = None
        self.batch = 0

    def finish(self, outcome, batch):
        if isinstance(outcome, BaseException):
            self.error = outcome
        else:
            self.value = outcome
        self.batch = batch
        self.done = True


class QueryBatcher:
    """Runs the jobs of concurrent callers in batches, one batch at a time.

    ``submit`` from any thread: when nothing runs, the caller runs the waiting jobs itself (its
    own among them, at most ``max_batch``, oldest first); otherwise it waits, and the jobs that
    gathered meanwhile run together next. ``run_batch(requests) -> outcomes`` gets a list of
    requests and returns one result or exception per request, in order.
    """

    def __init__(self, run_batch, max_batch=MAX_BATCH):
        self._run_batch = run_batch
        self.max_batch = max(1, int(max_batch))
        self._cond = threading.Condition()
        self._pending = []
        self._running = False

    def submit(self, request):
        """The outcome of ``request`` (its exception raised), and the size of its batch."""
        job = _Job(request)
        with self._cond:
            self._pending.append(job)
        while True:
            with self._cond:
                while not job.done and self._running:
                    self._cond.wait()
                if job.done:
                    break
                self._running = True
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
            try:
                self._execute(batch)
            finally:
                with self._cond:
                    self._running = False
                    self._cond.notify_all()
        if job.error is not None:
            raise job.error
        return job.value, job.batch

    def _execute(self, batch):
        try:
            outcomes = list(self._run_batch([job.request for job in batch]))
            if len(outcomes) != len(batch):
                raise RuntimeError(f"{len(outcomes)} outcomes for {len(batch)} searches")
        except BaseException as e:  # every job must finish, or its caller would wait forever
            outcomes = [e] * len(batch)
        for job, outcome in zip(batch, outcomes):
            job.finish(outcome, len(batch))


class SearchServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` holding the searcher and the gallery files it may serve.

    Searches go through one ``QueryBatcher``: the model is shared by every request thread and
    a CPU forward pass already uses the cores, so parallel searches would only contend, while
    one forward pass over the sentences of several requests costs far less than one each.
    """

    # socketserver's default backlog of 5 drops connections of a burst of requests.
    request_queue_size = REQUEST_QUEUE_SIZE

    def __init__(self, searcher, host="127.0.0.1", port=7860, max_batch=MAX_BATCH):
        # IPv6 literals ("::1", "::") need an IPv6 socket.
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), SearchHandler)
        self.searcher = searcher
        self.has_identities = bool(getattr(searcher, "has_identities", False))
        self.items = gallery_items(searcher)
        self.batcher = QueryBatcher(self._search_many, max_batch)
        # index -> (path, t_path) of every result returned, for searchers that list no items.
        self._returned = {}
        self._returned_lock = threading.Lock()

    @property
    def url(self):
        """``http://host:port/`` of the bound socket (the real port when 0 was asked)."""
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"

    def gallery_size(self):
        return None if self.items is None else len(self.items)

    def search(self, text, k, pid):
        """Run one search; returns the ``/api/search`` response dict."""
        size = self.gallery_size()
        top_k = min(k, size) if size else k
        start = time.perf_counter()
        found, batch = self.batcher.submit((text, top_k))
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        results = []
        for r in found:
            index = int(r["index"])
            t_path = r.get("t_path") or ""
            with self._returned_lock:
                self._returned[index] = (r.get("path", ""), t_path)
            out = {
                "rank": int(r["rank"]),
                "score": float(r["score"]),
                "name": str(r.get("name", "")),
                "index": index,
                "pid": int(r.get("pid", -1)),
                # Relative links keep the page working behind a path prefix.
                "image": f"image/{index}",
                "t_image": f"image/{index}?thermal=1" if t_path else None,
            }
            if pid is not None:
                out["match"] = out["pid"] == pid
            results.append(out)
        return {
            "query": text,
            "k": k,
            "results": results,
            "elapsed_ms": round(elapsed_ms, 3),
            "batch": batch,
        }

    def _search_many(self, requests):
        """Outcomes (result list or exception) of ``(text, top_k)`` requests: one
        ``search_batch`` call when the searcher has it, else (or when the batch fails, so that
        only a failing request fails) one ``search`` each."""
        search_batch = getattr(self.searcher, "search_batch", None)
        if search_batch is not None and len(requests) > 1:
            try:
                return search_batch([t for t, _ in requests], [k for _, k in requests])
            except Exception:
                pass
        outcomes = []
        for text, top_k in requests:
            try:
                outcomes.append(self.searcher.search(text, top_k))
            except Exception as e:
                outcomes.append(e)
        return outcomes

    def image_path(self, index, thermal):
        """The file of gallery item ``index`` (its thermal image with ``thermal``), or None."""
        if self.items is not None:
            if not 0 <= index < len(self.items):
                return None
            item = self.items[index]
            path = getattr(item, "t_path", "") if thermal else getattr(item, "path", "")
        else:
            with self._returned_lock:
                paths = self._returned.get(index)
            if paths is None:
                return None
            path = paths[1] if thermal else paths[0]
        return path or None

    def page_config(self):
        """What the page needs to know before its first search (embedded as JSON)."""
        # Known only from a gallery list; without one the page learns it from the results.
        pairs = None if self.items is None else any(getattr(i, "t_path", "") for i in self.items)
        return {
            "has_identities": self.has_identities,
            "count": self.gallery_size(),
            "pairs": pairs,
            "k_min": K_MIN,
            "k_max": K_MAX,
            "k_default": K_DEFAULT,
        }


class SearchHandler(BaseHTTPRequestHandler):
    """GET-only request handling of ``SearchServer``; one log line per request."""

    server_version = "PersonSearch/1.0"
    protocol_version = "HTTP/1.1"
    # Idle keep-alive connections are closed after this many seconds (each holds a thread).
    timeout = 30

    def do_GET(self):
        start = time.perf_counter()
        self._status = 0
        try:
            self._route()
        except BrokenPipeError:  # the browser went away (a new search replaced the images)
            pass
        except Exception as e:
            logger.error("%s failed:\n%s", self.path, traceback.format_exc())
            if not self._status:
                self._send_json(
                    {"error": f"internal error: {_one_line(e)}"}, HTTPStatus.INTERNAL_SERVER_ERROR
                )
        finally:
            ms = (time.perf_counter() - start) * 1000.0
            logger.info(
                '%s "GET %s" %s %.1f ms', self.client_address[0], self.path, self._status, ms
            )

    def _route(self):
        url = urlsplit(self.path)
        if url.path == "/":
            self._send_page()
        elif url.path == "/api/search":
            self._send_search(url.query)
        elif url.path.startswith("/image/"):
            self._send_image(url.path[len("/image/") :], url.query)
        else:
            self._send_json({"error": f"no such page: {url.path}"}, HTTPStatus.NOT_FOUND)

    def _send_page(self):
        config = json.dumps(self.server.page_config())
        # "<" escaped so that no value can close the <script> element holding the JSON.
        body = PAGE.replace("__CONFIG__", config.replace("<", "\\u003c")).encode("utf-8")
        self._send_bytes(
            body,
            "text/html; charset=utf-8",
            extra={
                # Everything is inline or from this server: the page loads nothing else.
                "Content-Security-Policy": "default-src 'none'; img-src 'self'; "
                "style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'",
                "Cache-Control": "no-cache",
            },
        )

    def _send_search(self, query_string):
        try:
            text, k, pid = parse_search_query(query_string, self.server.has_identities)
            response = self.server.search(text, k, pid)
        except ValueError as e:  # BadRequest, or the searcher's SearchError
            self._send_json({"error": _one_line(e)}, HTTPStatus.BAD_REQUEST)
            return
        self._send_json(response, HTTPStatus.OK)

    def _send_image(self, index_text, query_string):
        thermal = parse_qs(query_string).get("thermal", ["0"])[-1] not in ("", "0", "false")
        # Plain decimal digits only: no signs, spaces or other spellings of a number.
        if not (
            index_text.isascii() and index_text.isdigit() and len(index_text) <= MAX_INDEX_DIGITS
        ):
            self._send_json(
                {"error": f"no such gallery image: {_shown(index_text)} is not an index"},
                HTTPStatus.NOT_FOUND,
            )
            return
        index = int(index_text)
        path = self.server.image_path(index, thermal)
        what = f"gallery item {index}" + (" (thermal)" if thermal else "")
        if path is None:
            self._send_json({"error": f"no such gallery image: {what}"}, HTTPStatus.NOT_FOUND)
            return
        try:
            with open(path, "rb") as f:
                body = f.read()
        except OSError as e:
            # The path stays in the server log: the response must not reveal the file system.
            logger.warning("%s: cannot read %s (%s)", what, path, e.strerror or e)
            self._send_json({"error": f"{what} cannot be read on the server"}, HTTPStatus.NOT_FOUND)
            return
        content_type = mimetypes.guess_type(os.path.basename(path))[0]
        self._send_bytes(
            body, content_type or "application/octet-stream", extra={"Cache-Control": "max-age=600"}
        )

    def _send_json(self, obj, status):
        self._send_bytes(json.dumps(obj).encode("utf-8"), "application/json", status=status)

    def _send_bytes(self, body, content_type, status=HTTPStatus.OK, extra=None):
        self._status = int(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code="-", size="-"):
        pass  # do_GET writes the one line per request, with its duration

    def log_message(self, format, *args):
        # Requests http.server refuses itself (malformed, other methods) still get a line.
        logger.info("%s %s", self.client_address[0], format % args)


def make_server(searcher, host="127.0.0.1", port=7860, max_batch=MAX_BATCH):
    """A ``SearchServer`` for ``searcher`` bound to ``host:port`` (0: a free port), not started;
    ``max_batch``: searches run together at most (1: one at a time).

    Call ``serve_forever()`` (in a thread for tests), then ``shutdown()`` and ``server_close()``.
    """
    return SearchServer(searcher, host, port, max_batch)


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Person search</title>
<link rel="icon" href="data:,">
<style>
  /* The hidden attribute must win over the display rules below. */
  [hidden] { display: none !important; }
  body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
         background: #f4f5f7; color: #1d2127; }
  header { background: #1f3a5f; color: #fff; padding: 12px 20px; }
  header h1 { margin: 0; font-size: 20px; font-weight: 600; }
  header .info { font-size: 13px; opacity: 0.8; margin-top: 2px; }
  form { display: flex; flex-wrap: wrap; gap: 12px 20px; align-items: center;
         padding: 14px 20px; background: #fff; border-bottom: 1px solid #dde1e6; }
  #q { flex: 1 1 420px; font-size: 16px; padding: 8px 10px; border: 1px solid #b8c0ca;
       border-radius: 4px; }
  label { font-size: 14px; display: flex; align-items: center; gap: 6px; }
  #k { width: 150px; }
  #kval { display: inline-block; min-width: 2ch; font-weight: 600; text-align: right; }
  #pid { width: 90px; font-size: 14px; padding: 6px; border: 1px solid #b8c0ca;
         border-radius: 4px; }
  button { font-size: 15px; padding: 8px 20px; border: 0; border-radius: 4px;
           background: #2563eb; color: #fff; cursor: pointer; }
  button:hover { background: #1d4fd8; }
  #status { padding: 8px 20px; font-size: 14px; color: #4b5563; min-height: 1.2em; }
  #status.error { color: #b91c1c; font-weight: 600; }
  #results { display: flex; flex-wrap: wrap; gap: 12px; padding: 4px 20px 24px; }
  .card { background: #fff; border: 4px solid #d0d5dc; border-radius: 6px; padding: 6px;
          display: flex; flex-direction: column; align-items: center; width: min-content; }
  .card.match { border-color: #1f9d3a; }
  .card.miss { border-color: #d32f2f; }
  .head { display: flex; justify-content: space-between; width: 100%; font-size: 13px;
          margin-bottom: 4px; gap: 8px; }
  .rank { font-weight: 700; }
  .score { font-variant-numeric: tabular-nums; color: #374151; }
  .imgs { display: flex; gap: 3px; }
  .imgs img { height: 192px; width: 96px; object-fit: contain; background: #e5e7eb;
              display: block; }
  .name { font-size: 11px; color: #4b5563; margin-top: 4px; max-width: 100%;
          overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .pid { font-size: 12px; color: #111827; }
  .legend { font-size: 12px; color: #4b5563; }
  .legend b.g { color: #1f9d3a; } .legend b.r { color: #d32f2f; }
</style>
</head>
<body>
<header>
  <h1>Person search</h1>
  <div class="info" id="info"></div>
</header>
<form id="form" autocomplete="off">
  <input id="q" type="text" placeholder="Describe the person, e.g. a woman in a red coat and blue jeans">
  <label>top-k <input id="k" type="range" step="1"> <span id="kval"></span></label>
  <label id="pidbox" hidden>identity <input id="pid" type="number" min="0" step="1"
    placeholder="optional"></label>
  <button id="go" type="submit">Search</button>
</form>
<div id="status"></div>
<div id="results"></div>
<script type="application/json" id="config">__CONFIG__</script>
<script>
"use strict";
const APP = JSON.parse(document.getElementById("config").textContent);
const $ = (id) => document.getElementById(id);
const q = $("q"), k = $("k"), kval = $("kval"), pid = $("pid"), status = $("status");
let latest = 0;

k.min = APP.k_min; k.max = APP.k_max; k.value = APP.k_default;
const info = [];
if (APP.count !== null) {
  info.push(APP.count + (APP.pairs ? " RGB + thermal pairs" : " gallery images"));
}
if (APP.has_identities) info.push("with identities");
$("info").textContent = info.join(", ");
if (APP.has_identities) $("pidbox").hidden = false;

function showK() { kval.textContent = k.value; }
k.addEventListener("input", showK);

function setStatus(text, isError) {
  status.textContent = text;
  status.className = isError ? "error" : "";
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function image(src, alt) {
  const img = el("img");
  img.src = src; img.alt = alt; img.loading = "eager";
  return img;
}

function render(data) {
  const box = $("results");
  box.replaceChildren();
  let matches = 0;
  for (const r of data.results) {
    const card = el("div", "card");
    if (r.match === true) { card.classList.add("match"); matches += 1; }
    if (r.match === false) card.classList.add("miss");
    const head = el("div", "head");
    head.append(el("span", "rank", "#" + r.rank), el("span", "score", r.score.toFixed(4)));
    const imgs = el("div", "imgs");
    imgs.append(image(r.image, "RGB " + r.name));
    if (r.t_image) imgs.append(image(r.t_image, "thermal " + r.name));
    const name = el("div", "name", r.name);
    name.title = r.name;
    card.append(head, imgs, name);
    if (APP.has_identities) card.append(el("div", "pid", "id " + r.pid));
    box.append(card);
  }
  let text = data.results.length + " results in " + data.elapsed_ms.toFixed(1) + " ms";
  if (data.results.length && data.results[0].match !== undefined) {
    text += " \\u2014 identity " + pid.value.trim() + ": " + matches + " of " +
      data.results.length + " (green borders; others red)";
  }
  setStatus(text, false);
}

async function search() {
  const text = q.value.trim();
  if (!text) { setStatus("Type a description of the person first.", true); return; }
  const params = new URLSearchParams({ q: text, k: k.value });
  if (APP.has_identities && pid.value.trim() !== "") params.set("pid", pid.value.trim());
  history.replaceState(null, "", "?" + params.toString());
  const mine = ++latest;
  setStatus("Searching\\u2026", false);
  try {
    const resp = await fetch("api/search?" + params.toString());
    const data = await resp.json();
    if (mine !== latest) return;  // a newer search was started meanwhile
    if (!resp.ok) { setStatus(data.error || resp.statusText, true); return; }
    render(data);
  } catch (err) {
    if (mine === latest) setStatus("Search failed: " + err, true);
  }
}

$("form").addEventListener("submit", (event) => { event.preventDefault(); search(); });

// A link such as /?q=a+man+in+black&k=8 opens with that search done.
const start = new URLSearchParams(location.search);
if (start.has("k")) {
  const value = parseInt(start.get("k"), 10);
  if (!isNaN(value)) k.value = Math.min(APP.k_max, Math.max(APP.k_min, value));
}
if (start.has("pid") && APP.has_identities) pid.value = start.get("pid");
showK();
if (start.get("q")) { q.value = start.get("q"); search(); } else { q.focus(); }
</script>
</body>
</html>
"""
