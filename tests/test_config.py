import pytest

from shared.config import SETTINGS, SettingsError, load_settings
from shared.secrets import EnvironmentSecrets, SecretError, secret_provider

BASE = {"DocumentStorage": "UseDevelopmentStorage=true"}


def test_defaults_are_production_endpoints():
    settings = load_settings(BASE)
    assert settings.inqom_token_url == "https://auth.inqom.com/identity/connect/token"
    assert settings.inqom_api_base_url == "https://wa-fred-accounting-documents-prod.azurewebsites.net"
    assert settings.enfact_api_base_url == "https://api5.onfact.be"
    assert settings.allowed_folder_ids == frozenset()
    assert "pdf" in settings.allowed_extensions


def test_every_problem_is_named_at_once():
    env = {"MAX_UPLOAD_BYTES": "-3", "INQOM_API_BASE_URL": "http://inqom.example.com", "POLL_BATCH_SIZE": "many",
           "ENFACT_COMPANY_FOLDERS": "abc"}
    with pytest.raises(SettingsError) as error:
        load_settings(env)
    message = str(error.value)
    for name in ("MAX_UPLOAD_BYTES", "INQOM_API_BASE_URL", "POLL_BATCH_SIZE", "ENFACT_COMPANY_FOLDERS", "DocumentStorage"):
        assert name in message


def test_identity_based_storage_needs_every_service_uri():
    with pytest.raises(SettingsError, match="DocumentStorage__tableServiceUri"):
        load_settings({"DocumentStorage__blobServiceUri": "https://a.blob.core.windows.net",
                       "DocumentStorage__queueServiceUri": "https://a.queue.core.windows.net"})
    settings = load_settings({
        "DocumentStorage__blobServiceUri": "https://a.blob.core.windows.net",
        "DocumentStorage__queueServiceUri": "https://a.queue.core.windows.net",
        "DocumentStorage__tableServiceUri": "https://a.table.core.windows.net",
        "DocumentStorage__clientId": "1234",
    })
    assert settings.storage.connection_string is None
    assert settings.storage.client_id == "1234"


def test_lists_and_mappings_parse():
    settings = load_settings({**BASE, "ALLOWED_FOLDER_IDS": "11287, 42", "ALLOWED_EXTENSIONS": ".PDF,png",
                              "ENFACT_COMPANY_FOLDERS": "ABC-1=11287; def-2=42"})
    assert settings.allowed_folder_ids == {11287, 42}
    assert settings.allowed_extensions == {"pdf", "png"}
    assert settings.enfact_company_folders == {"abc-1": 11287, "def-2": 42}


@pytest.mark.parametrize("entry", ["https://store.example.com", "store.example.com:443", "store.example.com/x",
                                   "user@store.example.com", "[::1]"])
def test_archive_allowed_hosts_are_bare_host_names(entry):
    with pytest.raises(SettingsError, match="ARCHIVE_ALLOWED_HOSTS"):
        load_settings({**BASE, "ARCHIVE_ALLOWED_HOSTS": f"ok.example.com, {entry}"})


def test_archive_allowed_hosts_parse_lower_case():
    settings = load_settings({**BASE, "ARCHIVE_ALLOWED_HOSTS": "Store.Blob.core.windows.net, 127.0.0.1, ::1"})
    assert settings.archive_allowed_hosts == ("store.blob.core.windows.net", "127.0.0.1", "::1")


def test_settings_table_has_unique_names():
    names = [s.env for s in SETTINGS]
    assert len(names) == len(set(names))


def test_secrets_need_key_vault_or_explicit_local_opt_in():
    with pytest.raises(SecretError, match="KEY_VAULT_URL"):
        secret_provider(load_settings(BASE))
    provider = secret_provider(load_settings({**BASE, "SECRETS_FROM_ENVIRONMENT": "true"}),
                               environ={"INQOM_PASSWORD": "p"})
    assert isinstance(provider, EnvironmentSecrets)
    assert provider.get("inqom-password") == "p"
    with pytest.raises(SecretError, match="INQOM_USERNAME"):
        provider.get("inqom-username")


def test_local_settings_sample_names_every_setting_and_binding_expression():
    import json
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    values = json.loads((root / "local.settings.sample.json").read_text())["Values"]
    assert {s.env for s in SETTINGS} <= set(values), "local.settings.sample.json lacks a setting"
    expressions = set()
    for module in (root / "functions").glob("*.py"):
        expressions |= set(re.findall(r"%([A-Z_]+)%", module.read_text()))
    assert expressions and expressions <= set(values)


def test_the_app_refuses_to_start_with_a_bad_setting_or_no_secret_source():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("INQOM_", "ENFACT_", "KEY_VAULT", "SECRETS_"))}
    for extra, expected in (({"POLL_BATCH_SIZE": "lots"}, "POLL_BATCH_SIZE"), ({}, "KEY_VAULT_URL")):
        env = {**clean, "DocumentStorage": "UseDevelopmentStorage=true", **extra}
        result = subprocess.run([sys.executable, "-c", "import function_app"], cwd=root, env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode != 0 and expected in result.stderr, result.stderr[-2000:]
