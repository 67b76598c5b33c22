"""Wires the app together once per process: settings → secrets → one HTTP layer → clients.

    services = get_services()          # validated settings, shared session and token cache
    services.inqom.get_document(folder, doc_id)

Tests build ``Services(load_settings(env))`` directly to point at emulators.
"""

from __future__ import annotations

from functools import cached_property, lru_cache

from azure.storage.queue import QueueClient

from shared.auth import InqomTokenProvider
from shared.inqom.budget import InqomBudget
from shared.config import Settings, get_settings
from shared.http import HttpClient, RetryPolicy
from shared.inqom.client import InqomClient
from shared.ledger.rows import Ledger
from shared.metrics import InqomCallMetrics
from shared.drop.routing import RoutingRules
from shared.secrets import SecretProvider, secret_provider
from shared.storage import StorageClients


class Services:
    def __init__(self, settings: Settings, secrets: SecretProvider | None = None) -> None:
        self.settings = settings
        self._secrets = secrets

    def validate(self) -> None:
        """Fail now, naming the problem, when a setting or the secret source is missing (app start-up)."""
        self.secrets  # noqa: B018 — building the provider checks KEY_VAULT_URL / SECRETS_FROM_ENVIRONMENT

    @cached_property
    def secrets(self) -> SecretProvider:
        return self._secrets or secret_provider(self.settings)

    @cached_property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(max_attempts=self.settings.http_max_attempts, backoff_cap=self.settings.http_backoff_cap)

    @cached_property
    def inqom_budget(self) -> InqomBudget:
        """The fleet-wide Inqom rate budget (``INQOM_RATE_LIMIT``, shared through the ledger table)."""
        return InqomBudget.from_services(self)

    @cached_property
    def inqom_http(self) -> HttpClient:
        """Unauthenticated layer (token endpoint) under the fleet-wide Inqom budget."""
        return HttpClient("inqom", timeout=self.settings.http_timeout, retry=self.retry,
                          throttle=self.inqom_budget, observer=InqomCallMetrics())

    @cached_property
    def tokens(self) -> InqomTokenProvider:
        return InqomTokenProvider(self.secrets, self.settings.inqom_token_url, self.inqom_http)

    @cached_property
    def inqom(self) -> InqomClient:
        return InqomClient(self.settings.inqom_api_base_url, self.inqom_http.with_auth(self.tokens),
                           downloads=self.download_http)

    @cached_property
    def download_http(self) -> HttpClient:
        """Temporary public URLs point at Inqom's storage, not its API: own pool, outside the API budget."""
        return HttpClient("inqom-storage", timeout=self.settings.http_timeout, retry=self.retry)

    @cached_property
    def enfact_http(self) -> HttpClient:
        """enFact layer: same timeouts and retry policy; the API key is added per company."""
        return HttpClient("enfact", timeout=self.settings.http_timeout, retry=self.retry)

    @cached_property
    def stores(self) -> StorageClients:
        return StorageClients.from_settings(self.settings)

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(self.stores.table(self.settings.ledger_table))

    @cached_property
    def enfact_queue(self) -> QueueClient:
        return self.stores.queue(self.settings.enfact_queue)

    def ensure_storage(self, extra_queues: tuple[str, ...] = ()) -> None:
        """Create the containers, table and queue the settings name (local runs and tests; Bicep does it in Azure)."""
        s = self.settings
        self.stores.ensure(containers=(s.inbox_container, s.archive_container, s.quarantine_container,
                                       s.ledger_backup_container),
                           tables=(s.ledger_table,), queues=(s.enfact_queue, *extra_queues))

    @cached_property
    def routing_rules(self) -> RoutingRules:
        return RoutingRules(self.settings.allowed_folder_ids, self.settings.allowed_extensions,
                            self.settings.max_upload_bytes)


@lru_cache(maxsize=1)
def get_services() -> Services:
    """The process-wide services (``get_services.cache_clear()`` after changing the environment)."""
    return Services(get_settings())
