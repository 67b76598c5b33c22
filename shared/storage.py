"""Storage clients for the ``DocumentStorage`` connection (connection string or managed identity).

    stores = StorageClients.from_settings(settings)
    stores.container(settings.inbox_container).upload_blob(...)

Blob reads for uploads go through ``BlobRangeReader``: ranged GETs of a few MiB, pinned to the
blob's ETag, so a file streams to Inqom without being held in memory and a blob replaced
mid-upload fails instead of mixing two versions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterable

from azure.core import MatchConditions
from azure.storage.blob import BlobClient, BlobServiceClient, ContainerClient
from azure.data.tables import TableClient, TableServiceClient
from azure.storage.queue import QueueClient, QueueServiceClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from shared.config import Settings, StorageConnection

READ_CHUNK = 4 * 1024 * 1024
STORAGE_TIMEOUT = 60  # seconds per storage operation (server + connection)
#: Transport timeouts for every storage client (the SDK defaults wait up to 300 s for a read).
TIMEOUTS = {"connection_timeout": 10, "read_timeout": STORAGE_TIMEOUT}


def _credential(connection: StorageConnection) -> Any:
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=connection.client_id)


@dataclass
class StorageClients:
    connection: StorageConnection

    @classmethod
    def from_settings(cls, settings: Settings) -> "StorageClients":
        return cls(settings.storage)

    @cached_property
    def blobs(self) -> BlobServiceClient:
        if self.connection.connection_string:
            return BlobServiceClient.from_connection_string(self.connection.connection_string, **TIMEOUTS)
        return BlobServiceClient(self.connection.blob_service_uri, credential=_credential(self.connection), **TIMEOUTS)

    @cached_property
    def tables(self) -> TableServiceClient:
        if self.connection.connection_string:
            return TableServiceClient.from_connection_string(self.connection.connection_string, **TIMEOUTS)
        return TableServiceClient(self.connection.table_service_uri, credential=_credential(self.connection), **TIMEOUTS)

    def container(self, name: str) -> ContainerClient:
        return self.blobs.get_container_client(name)

    def table(self, name: str) -> TableClient:
        return self.tables.get_table_client(name)

    def queue(self, name: str) -> QueueClient:
        """Messages are base64-encoded text, as the Functions queue trigger expects by default."""
        policies = {"message_encode_policy": TextBase64EncodePolicy(), "message_decode_policy": TextBase64DecodePolicy(),
                    **TIMEOUTS}
        if self.connection.connection_string:
            return QueueClient.from_connection_string(self.connection.connection_string, name, **policies)
        service = QueueServiceClient(self.connection.queue_service_uri, credential=_credential(self.connection))
        return QueueClient(service.url, name, credential=service.credential, **policies)

    def ensure(self, containers: Iterable[str] = (), tables: Iterable[str] = (), queues: Iterable[str] = ()) -> None:
        """Create what is missing (local development and tests; Bicep creates them in Azure)."""
        from azure.core.exceptions import ResourceExistsError

        for name in containers:
            try:
                self.container(name).create_container()
            except ResourceExistsError:
                pass
        for name in tables:
            self.tables.create_table_if_not_exists(name)
        for name in queues:
            try:
                self.queue(name).create_queue()
            except ResourceExistsError:
                pass


class BlobRangeReader:
    """Read-only file object over one blob version: ``read(n)`` served from ranged GETs.

    ``len`` (bytes not yet read) is what requests-toolbelt's ``MultipartEncoder`` sizes and drains by;
    ``sha1`` is the SHA-1 of everything read so far.
    """

    def __init__(self, blob: BlobClient, size: int, etag: str, chunk: int = READ_CHUNK) -> None:
        self._blob = blob
        self._etag = etag
        self._chunk = chunk
        self._fetched = 0
        self._buffer = b""
        self._buffer_pos = 0
        self._position = 0
        self.size = size
        self.sha1 = hashlib.sha1()

    @property
    def len(self) -> int:
        return self.size - self._position

    def tell(self) -> int:
        return self._position

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.size - self._position
        parts: list[bytes] = []
        wanted = size
        while wanted > 0:
            if self._buffer_pos >= len(self._buffer):
                if self._fetched >= self.size:
                    break
                self._fill()
            part = self._buffer[self._buffer_pos:self._buffer_pos + wanted]
            self._buffer_pos += len(part)
            wanted -= len(part)
            parts.append(part)
        out = b"".join(parts)
        self._position += len(out)
        self.sha1.update(out)
        return out

    def _fill(self) -> None:
        length = min(self._chunk, self.size - self._fetched)
        self._buffer = self._blob.download_blob(
            offset=self._fetched, length=length, etag=self._etag,
            match_condition=MatchConditions.IfNotModified, timeout=STORAGE_TIMEOUT,
        ).readall()
        self._buffer_pos = 0
        if len(self._buffer) != length:
            raise IOError(f"blob {self._blob.blob_name} returned {len(self._buffer)} of {length} bytes")
        self._fetched += length

    def close(self) -> None:
        self._buffer = b""
