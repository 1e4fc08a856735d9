"""Text search over an index of person crops (``tools/build_index.py``, ``tools/search.py``)."""

from .engine import QueryEncoder, TextSearcher, build_index, sha256_file  # noqa: F401
from .gallery import GalleryError, GalleryItem, SearchError, list_gallery  # noqa: F401
from .index import IndexError_, SearchIndex  # noqa: F401
