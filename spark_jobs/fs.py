"""Hadoop FileSystem operations through the Spark driver's JVM.

Any Hadoop URI works (``hdfs://``, ``file://``). Errors from the JVM are
turned into messages that say which path and which service.
"""

from __future__ import annotations

from py4j.protocol import Py4JJavaError
from pyspark.sql import SparkSession

from .errors import InfrastructureError

_UNREACHABLE = (
    "java.net.ConnectException",
    "java.net.UnknownHostException",
    "java.net.NoRouteToHostException",
    "java.net.SocketTimeoutException",
    "org.apache.hadoop.ipc.RetriableException",
    "org.apache.hadoop.hdfs.server.namenode.SafeModeException",
    "org.apache.hadoop.ipc.StandbyException",
)


def java_error_chain(exc: Py4JJavaError) -> list[str]:
    """The Java exception and its causes, outermost first (Spark wraps the real cause)."""
    out: list[str] = []
    try:
        j = exc.java_exception
        while j is not None and len(out) < 12:
            out.append(str(j.toString()))
            j = j.getCause()
    except Exception:  # noqa: BLE001
        out = out or [str(exc).splitlines()[0]]
    return out


def java_error_text(exc: Py4JJavaError) -> str:
    try:
        return str(exc.java_exception.toString())
    except Exception:  # noqa: BLE001
        return str(exc).splitlines()[0]


class HadoopFs:
    def __init__(self, spark: SparkSession):
        self._jvm = spark._jvm
        self._conf = spark._jsc.hadoopConfiguration()

    def _path(self, uri: str):
        return self._jvm.org.apache.hadoop.fs.Path(uri)

    def _call(self, what: str, uri: str, fn):
        try:
            return fn()
        except Py4JJavaError as exc:
            text = java_error_text(exc)
            if any(name in text or name in str(exc) for name in _UNREACHABLE):
                raise InfrastructureError(
                    f"cannot {what} {uri}: the filesystem is not reachable or not ready ({text}). "
                    "Check that the NameNode is up and out of safe mode; the run can be retried."
                ) from None
            raise OSError(f"cannot {what} {uri}: {text}") from None

    def _fs(self, uri: str):
        p = self._path(uri)
        return p, p.getFileSystem(self._conf)

    def exists(self, uri: str) -> bool:
        def go():
            p, fs = self._fs(uri)
            return bool(fs.exists(p))
        return self._call("check", uri, go)

    def is_file(self, uri: str) -> bool:
        def go():
            p, fs = self._fs(uri)
            return bool(fs.exists(p)) and bool(fs.getFileStatus(p).isFile())
        return self._call("check", uri, go)

    def size(self, uri: str) -> int:
        """Bytes of a file."""
        def go():
            p, fs = self._fs(uri)
            return int(fs.getFileStatus(p).getLen())
        return self._call("check", uri, go)

    def mkdirs(self, uri: str):
        def go():
            p, fs = self._fs(uri)
            if not fs.mkdirs(p):
                raise OSError(f"mkdirs returned false for {uri}")
        self._call("create folder", uri, go)

    def delete(self, uri: str):
        def go():
            p, fs = self._fs(uri)
            if fs.exists(p):
                fs.delete(p, True)
        self._call("delete", uri, go)

    def rename(self, src: str, dst: str):
        """Move ``src`` to ``dst`` (which must not exist) in one rename."""
        def go():
            s, fs = self._fs(src)
            d = self._path(dst)
            if fs.exists(d):
                raise OSError(f"rename target {dst} already exists")
            parent = d.getParent()
            if parent is not None and not fs.exists(parent):
                fs.mkdirs(parent)
            if not fs.rename(s, d):
                raise OSError(f"rename {src} -> {dst} returned false")
        self._call("rename", src, go)

    def write_text(self, uri: str, text: str):
        def go():
            p, fs = self._fs(uri)
            out = fs.create(p, True)
            try:
                out.write(bytearray(text.encode("utf-8")))
            finally:
                out.close()
        self._call("write", uri, go)

    def read_text(self, uri: str) -> str:
        def go():
            p, fs = self._fs(uri)
            stream = fs.open(p)
            try:
                reader = self._jvm.java.io.BufferedReader(
                    self._jvm.java.io.InputStreamReader(stream, "UTF-8"))
                lines = []
                line = reader.readLine()
                while line is not None:
                    lines.append(line)
                    line = reader.readLine()
                return "\n".join(lines)
            finally:
                stream.close()
        return self._call("read", uri, go)

    def list_names(self, uri: str) -> list[str]:
        def go():
            p, fs = self._fs(uri)
            if not fs.exists(p):
                return []
            return sorted(str(st.getPath().getName()) for st in fs.listStatus(p))
        return self._call("list", uri, go)
