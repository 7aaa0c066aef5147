"""HDFS over WebHDFS (the NameNode's HTTP API), for callers without a JVM: the
DAG's Python stages on the Airflow worker (the airflow role ships this file
into the DAG's package) and the tests' helpers.

A thin face on the ``hdfs`` package's ``InsecureClient`` (simple
authentication: the user name travels as ``user.name``), with the methods the
publish needs (spark_jobs/publish.py) and errors that say which service: an
unreachable NameNode, or one in safe mode, is an InfrastructureError (retry);
anything else an OSError naming the path.
"""

from __future__ import annotations

from contextlib import contextmanager

from .errors import InfrastructureError

# Answers of a NameNode that is there but cannot serve yet: retry later.
_NOT_READY = ("SafeModeException", "RetriableException", "StandbyException")


class WebHdfs:
    def __init__(self, base: str, user: str, timeout: float = 60):
        """``base``: http://HOST:PORT of the NameNode's HTTP server (no /webhdfs/v1)."""
        import requests
        from hdfs import InsecureClient

        self.base, self.user = base.rstrip("/"), user
        session = requests.Session()
        session.trust_env = False   # the NameNode is reached directly, never through an HTTP proxy
        self.client = InsecureClient(self.base, user=user, timeout=timeout, session=session)

    @contextmanager
    def _errors(self, what: str, path: str):
        import requests
        from hdfs.util import HdfsError

        try:
            yield
        except requests.RequestException as exc:
            raise InfrastructureError(f"cannot {what} {path}: the NameNode at {self.base} is unreachable ({exc}); "
                                      "check that it is up, the run can be retried") from None
        except HdfsError as exc:
            text = str(exc)
            if any(name in text for name in _NOT_READY) or "safe mode" in text.lower():
                raise InfrastructureError(f"cannot {what} {path}: the NameNode at {self.base} is not ready "
                                          f"({text}); the run can be retried") from None
            raise OSError(f"cannot {what} {path}: {text}") from None

    def status(self, path: str) -> dict | None:
        """WebHDFS's FileStatus of ``path``, None when it does not exist."""
        with self._errors("check", path):
            return self.client.status(path, strict=False)

    def exists(self, path: str) -> bool:
        return self.status(path) is not None

    def list(self, path: str) -> list[dict]:
        """FileStatus of each entry (``pathSuffix`` is its name); [] when ``path`` does not exist."""
        if self.status(path) is None:
            return []
        with self._errors("list", path):
            return [dict(st, pathSuffix=name) for name, st in self.client.list(path, status=True)]

    def read(self, path: str) -> bytes:
        if self.status(path) is None:
            raise FileNotFoundError(f"{path} does not exist in HDFS")
        with self._errors("read", path), self.client.read(path) as reader:
            return reader.read()

    def read_text(self, path: str) -> str:
        return self.read(path).decode("utf-8")

    def mkdirs(self, path: str):
        with self._errors("create folder", path):
            self.client.makedirs(path)

    def delete(self, path: str):
        """Recursive; nothing to do when ``path`` does not exist."""
        with self._errors("delete", path):
            self.client.delete(path, recursive=True)

    def rename(self, src: str, dst: str):
        """Move ``src`` to ``dst`` (which must not exist) in one rename; the parent is created."""
        if self.exists(dst):
            raise OSError(f"rename target {dst} already exists")
        self.mkdirs(dst.rsplit("/", 1)[0] or "/")
        with self._errors("rename", src):
            self.client.rename(src, dst)

    def write(self, path: str, data: bytes):
        """``data`` as the file ``path`` (parents created, an existing file replaced)."""
        with self._errors("write", path):
            self.client.write(path, data=data, overwrite=True)
