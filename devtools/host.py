"""Drive the registered v2 functions the way the Functions host does (a development aid).

Azure Functions Core Tools cannot run everywhere; this reads each function's trigger binding
from ``function_app.app`` itself and builds the same inputs the host would hand the worker:

    host = LocalHost(function_app.app)
    host.deliver_blob("upload_document", "11287/supplier/a.pdf")   # as an Event Grid BlobCreated would
    host.fire_timer("poll_documents")

It is not the real host: no scale-out, no Event Grid retries; see README "Running locally".
"""

from __future__ import annotations

import inspect
import json
import os
import re
import uuid
from dataclasses import dataclass
from typing import Any

import azure.functions as func
import azure.functions.queue  # noqa: F401  (func.queue.QueueMessage, the worker's concrete class)
from azurefunctions.extensions.base import Datum


@dataclass(frozen=True)
class ModelBindingData:
    """The payload the host sends for SDK-type bindings (same attribute names as the worker's)."""

    version: str
    source: str
    content_type: str
    content: str


class InvocationContext(func.Context):
    """What the worker passes as ``context``: one fresh invocation id per call."""

    def __init__(self, function_name: str) -> None:
        self._function_name = function_name
        self._invocation_id = str(uuid.uuid4())

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return "."

    @property
    def trace_context(self) -> Any:
        return None

    @property
    def retry_context(self) -> Any:
        return None

    @property
    def thread_local_storage(self) -> Any:
        return None


def _resolve(expression: str) -> str:
    """Replace ``%SETTING%`` app-setting references like the host does."""
    def lookup(match: re.Match) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise KeyError(f"binding expression refers to app setting {name!r}, which is not set")
        return os.environ[name]

    return re.sub(r"%([^%]+)%", lookup, expression)


_indexed: dict[int, list] = {}


def registered_functions(app: func.FunctionApp) -> list:
    """``app.get_functions()``, asked once per app: a second call raises on "unique function name"."""
    if id(app) not in _indexed:
        _indexed[id(app)] = app.get_functions()
    return _indexed[id(app)]


class LocalHost:
    def __init__(self, app: func.FunctionApp) -> None:
        self.functions = {fn.get_function_name(): fn for fn in registered_functions(app)}

    def trigger(self, name: str) -> dict[str, Any]:
        bindings = self.functions[name].get_bindings_dict()["bindings"]
        return next(b for b in bindings if str(b["type"]).endswith("Trigger"))

    def functions_of_type(self, trigger_type: str) -> list[str]:
        return [name for name in self.functions if self.trigger(name)["type"] == trigger_type]

    def _invoke(self, name: str, trigger_value: Any) -> Any:
        user_function = self.functions[name].get_user_function()
        arguments = {self.trigger(name)["name"]: trigger_value}
        if "context" in inspect.signature(user_function).parameters:
            arguments["context"] = InvocationContext(function_name=name)
        return user_function(**arguments)

    def blob_container(self, name: str) -> str:
        return _resolve(self.trigger(name)["path"]).split("/", 1)[0]

    def deliver_blob(self, name: str, blob_name: str) -> Any:
        """Invoke blob-trigger function ``name`` for ``blob_name`` with an SDK-type ``BlobClient``."""
        from azurefunctions.extensions.bindings.blob.blobClientConverter import BlobClientConverter

        binding = self.trigger(name)
        param_type = self.functions[name].get_user_function().__annotations__[binding["name"]]
        content = {"Connection": binding["connection"], "ContainerName": self.blob_container(name),
                   "BlobName": blob_name}
        data = Datum(ModelBindingData("1.0", "AzureStorageBlobs", "application/json", json.dumps(content)),
                     "model_binding_data")
        return self._invoke(name, BlobClientConverter.decode(data, trigger_metadata={}, pytype=param_type))

    def fire_timer(self, name: str, past_due: bool = False) -> Any:
        """Invoke timer function ``name`` once, as a schedule occurrence would."""
        return self._invoke(name, func.timer.TimerRequest(past_due=past_due))

    def schedule(self, name: str) -> str:
        return _resolve(self.trigger(name)["schedule"])

    def http_route(self, name: str) -> tuple[str, list[str], str]:
        """(route, methods, auth level) of HTTP function ``name``."""
        binding = self.trigger(name)
        methods = [str(getattr(m, "value", m)).upper() for m in binding.get("methods") or ["GET", "POST"]]
        level = binding.get("authLevel", func.AuthLevel.FUNCTION)
        return binding["route"], methods, str(getattr(level, "value", level)).lower()

    def call_http(self, name: str, method: str, url: str, headers: dict[str, str], body: bytes) -> func.HttpResponse:
        """Invoke HTTP function ``name`` with the request the host would build (key already checked)."""
        return self._invoke(name, func.HttpRequest(method, url, headers=headers, body=body))

    def queue_name(self, name: str) -> str:
        return _resolve(self.trigger(name)["queueName"])

    def deliver_queue_message(self, name: str, body: str, dequeue_count: int = 1, message_id: str = "local") -> Any:
        """Invoke queue-trigger function ``name`` with one message, as the host does on dequeue."""
        message = func.queue.QueueMessage(id=message_id, body=body.encode(), dequeue_count=dequeue_count)
        return self._invoke(name, message)
