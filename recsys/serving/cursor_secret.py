"""The HMAC key of feed cursors: from the configuration, else made once and kept in the data directory.

``service.cursor_secret`` (``RECSYS_SERVICE_CURSOR_SECRET``) wins. Without it the first process to start
makes 32 random bytes with :mod:`secrets` and writes them to ``<data_dir>/cursor_secret`` (mode 0600,
through a private temporary file linked into place, so that workers starting together agree on one key);
later processes and restarts read it. The key is never derived from other settings.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from recsys.config import Config
from recsys.errors import ConfigError

log = logging.getLogger(__name__)

SECRET_FILE = "cursor_secret"


def cursor_secret(config: Config) -> bytes:
    """The cursor key of this deployment (see the module docstring)."""
    if config.service.cursor_secret:
        return config.service.cursor_secret.encode()
    return _stored_secret(Path(config.data_dir) / SECRET_FILE)


def _stored_secret(path: Path) -> bytes:
    if not path.exists():
        try:
            _create(path)
        except OSError as exc:
            raise ConfigError(f"cannot create the cursor secret {path}: {exc.strerror or exc}; "
                              "make the data directory writable or set service.cursor_secret") from exc
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the cursor secret {path}: {exc.strerror or exc}; "
                          "fix its permissions or set service.cursor_secret") from exc
    if len(text) < 16:
        raise ConfigError(f"the cursor secret in {path} is shorter than 16 characters; delete the file to make a new one")
    return text.encode()


def _create(path: Path) -> None:
    """Write a new key to ``path`` (0600) unless another process got there first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)  # atomic and never replaces: a concurrent starter's key wins if it was first
            log.info("made a new cursor secret in %s (set service.cursor_secret to manage it yourself)", path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
