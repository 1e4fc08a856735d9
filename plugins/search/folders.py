"""Output folders of the search tools (an index, an ONNX export): checked, locked, replaced whole.

A folder of several files that belong together (``index.faiss`` + ``items.json`` +
``identity.json``; two ``.onnx`` files + ``onnx.json``) must never hold files of two writers.
Three pieces make sure of it:

- ``check_output_folder``: before any work, the folder can be written (or created) and holds
  nothing but what the tool itself writes there, since the folder is replaced whole;
- ``FolderLock``: an exclusive ``flock`` on ``<folder>/.lock`` for the whole write, as training
  locks ``OUTPUT_DIR`` (``plugins.engine.defaults.OutputDirLock``, which it extends), so a second
  writer stops at once with one line;
- ``staged_folder``: the files are written into a hidden sibling folder, which then takes the
  folder's place in one step (Linux ``renameat2(RENAME_EXCHANGE)``; elsewhere two renames). A
  writer that dies leaves the previous folder as it was.
"""

import contextlib
import ctypes
import errno
import hashlib
import os
import re
import shutil
import stat

from plugins.engine.defaults import OutputDirInUse, OutputDirLock

from .gallery import SearchError

LOCK_FILE = ".lock"
_STAGING = re.compile(r"^\.(?P<name>.+)\.(?:build|old)-(?P<pid>\d+)$")
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def nearest_existing(path):
    """``path`` itself when it exists, else the nearest folder (or file) above it that does."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def is_writable(folder):
    """Whether files can be created in ``folder`` or, when it does not exist yet, in the
    nearest folder above it that exists (where it would be created)."""
    path = nearest_existing(folder)
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def check_output_folder(folder, flag, allowed):
    """Refuse, with one line, an output folder that cannot be written or replaced whole.

    Args:
        folder (str): the folder the tool writes (created when missing).
        flag (str): how the user named it, for the message (``--out``).
        allowed (callable): ``allowed(name) -> bool`` for the entries the tool itself writes
            there (the folder is replaced whole: anything else would be lost).
    Returns:
        str: the folder's real path (a symbolic link to a folder is followed, so the link
        stays and the folder it names is replaced).
    """
    if not folder:
        raise SearchError(f"no output folder: pass {flag} DIR.")
    real = os.path.realpath(folder)
    if os.path.exists(real) and not os.path.isdir(real):
        raise SearchError(f"{flag} {folder} is a file: pass a folder (it is created if missing).")
    parent = os.path.dirname(real)
    existing = nearest_existing(parent)
    if not os.path.isdir(existing):
        raise SearchError(
            f"{flag} {folder} cannot be created: {existing} is a file, not a folder; pass a "
            "folder path."
        )
    if not is_writable(parent) or (os.path.isdir(real) and not is_writable(real)):
        where = real if os.path.isdir(real) and is_writable(parent) else existing
        raise SearchError(
            f"{flag} {folder} cannot be written ({where} is read-only or not yours): pass a "
            "folder you can write to."
        )
    if os.path.isdir(real):
        others = sorted(
            n
            for n in os.listdir(real)
            if n != LOCK_FILE and not _STAGING.match(n) and not allowed(n)
        )
        if others:
            shown = ", ".join(others[:3]) + (
                f", ... ({len(others) - 3} more)" if len(others) > 3 else ""
            )
            raise SearchError(
                f"{flag} {folder} holds files this tool did not write ({shown}) and the folder "
                "is replaced whole: pass a new or empty folder, or one this tool wrote before."
            )
    return real


class FolderLock(OutputDirLock):
    """``OutputDirLock`` on an output folder of the search tools, refusing with a ``SearchError``.

    ``staged_folder`` replaces the folder (and so the lock file) when a writer finishes; a
    writer that opened the old lock file just before is told apart by the file's identity and
    locks the new folder's instead.
    """

    def __init__(self, folder, flag="--out"):
        super().__init__(folder)
        self.flag = flag

    def __enter__(self):
        for _ in range(10):
            try:
                super().__enter__()
            except OutputDirInUse as e:
                holder = re.search(r"\(pid ([^,]+),", str(e))
                raise SearchError(
                    f"{self.flag} {self.output_dir} is being written by another process (pid "
                    f"{holder.group(1) if holder else 'unknown'}, holding {self.path}): wait for "
                    f"it to finish, or pass another {self.flag}."
                ) from None
            except OSError as e:
                raise SearchError(
                    f"cannot lock {self.path} ({e.strerror or e}): pass a {self.flag} folder you "
                    "can write to."
                ) from e
            if self._fd is None:  # a non-main process of a distributed run: no lock
                return self
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            if current is not None and os.path.samestat(os.fstat(self._fd), current):
                return self
            self.__exit__(None, None, None)  # the folder was replaced meanwhile: lock the new one
        raise SearchError(f"cannot lock {self.path}: the folder keeps being replaced.")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(real):
    """Remove the staging folders of ``real`` that writers which no longer run left behind."""
    parent, name = os.path.split(real)
    for entry in os.listdir(parent):
        match = _STAGING.match(entry)
        if match and match.group("name") == name:
            pid = int(match.group("pid"))
            if pid != os.getpid() and not _pid_alive(pid):
                shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def _exchange(a, b):
    """Swap two paths in one step (Linux ``renameat2``); False where that is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), b)


def swap_in(staging, real):
    """Put the folder ``staging`` at ``real`` (a sibling), replacing the folder there whole."""
    if not os.path.lexists(real):
        os.rename(staging, real)
        return
    if _exchange(staging, real):
        shutil.rmtree(staging, ignore_errors=True)  # now the previous folder
        return
    parent, name = os.path.split(real)
    old = os.path.join(parent, f".{name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.rename(real, old)
    os.rename(staging, real)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(folder):
    """Yield a new hidden sibling folder of ``folder`` to write into; on a normal exit it
    replaces ``folder`` whole (created when missing), on an exception it is removed and
    ``folder`` stays as it was. The new folder keeps the old one's permissions."""
    real = os.path.realpath(folder)
    parent, name = os.path.split(real)
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{name}.build-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    os.mkdir(staging)
    try:
        if os.path.isdir(real):
            os.chmod(staging, stat.S_IMODE(os.stat(real).st_mode))
        yield staging
        swap_in(staging, real)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def sha256_file(path, chunk_size=1 << 20):
    """Hex sha256 of a file, read in chunks (checkpoints are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()
