"""A real S3-compatible server on 127.0.0.1 for object-storage tests: moto's ThreadedMotoServer.

s3fs talks HTTP to it exactly as to AWS (moto's in-process mock does not work with s3fs's
aiobotocore). The endpoint and dummy credentials go in the standard AWS variables
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), which is how an operator configures audiobatch too,
so subprocesses and Prefect workers started by a test reach the same server.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.localserver import free_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class S3:
    endpoint: str
    env: dict[str, str]  # what a process needs to reach the server

    @property
    def fs(self):  # noqa: ANN201 - s3fs.S3FileSystem
        import s3fs

        return s3fs.S3FileSystem(endpoint_url=self.endpoint, key="testing", secret="testing",
                                 skip_instance_cache=True, use_listings_cache=False)

    def bucket(self, name: str) -> str:
        """A new empty bucket; returns its URL (s3://name)."""
        self.fs.mkdir(name)
        return f"s3://{name}"

    def upload(self, local: Path, url: str) -> str:
        self.fs.put_file(str(local), url)
        return url


@contextmanager
def s3_server() -> Iterator[S3]:
    """Start the server, point this process's AWS settings at it; restore them afterwards."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, **CREDENTIALS}
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield S3(endpoint, env)
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
