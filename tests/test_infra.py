"""Infrastructure tests: the Bicep templates under infra/ parse, pass checkov, match the code.

* every ``.bicep`` file parses with ``pycep-parser`` (the parser checkov itself uses);
* ``checkov --framework bicep -d infra`` (run once per module) reports no failed check; every
  exception is an in-resource ``// checkov:skip=ID: justification`` comment;
* every setting ``shared.config.SETTINGS`` reads is an app setting of the function app, and
  every secret ``shared.secrets.SECRET_NAMES`` reads is declared in the Key Vault module;
* the security properties the deployment promises hold in the parsed templates (no shared key,
  no public blob access, TLS 1.2, RBAC vault, exactly the listed roles, Event Grid filtered on
  the inbox), and the azd wiring (azure.yaml, parameters, post-deploy hook) is consistent.

pycep returns identifiers and string literals alike as Python strings (``name: foo`` and
``name: 'foo'`` both give ``"foo"``); the helpers below resolve a string through the file's
parameters and variables when it names one. String interpolations (``'${a}/b'``) stay text:
where a check needs what is inside one, it substitutes plain ``${identifier}`` references or,
as a secondary check, matches the raw template text (said so at each place).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest tests/test_infra.py` without a rootdir conftest
    sys.path.insert(0, str(ROOT))

from shared.config import SETTINGS, STORAGE_CONNECTION  # noqa: E402
from shared.secrets import SECRET_NAMES, env_var_for  # noqa: E402

INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
POSTDEPLOY_SH = ROOT / "scripts" / "azd-postdeploy.sh"
POSTDEPLOY_PS1 = ROOT / "scripts" / "azd-postdeploy.ps1"

EXPECTED_MODULES = {
    "modules/identity.bicep",
    "modules/monitoring.bicep",
    "modules/storage.bicep",
    "modules/keyvault.bicep",
    "modules/functionapp.bicep",
    "modules/roles.bicep",
    "modules/eventgrid.bicep",
}
SUBSCRIPTION_STAGE = "eventgrid-subscription.bicep"

# Built-in role definition ids.
STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
STORAGE_QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
STORAGE_TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
STORAGE_ACCOUNT = "Microsoft.Storage/storageAccounts"
BLOB_CONTAINER = "Microsoft.Storage/storageAccounts/blobServices/containers"

# (principal parameter, role, type of the resource the assignment is scoped to): exactly these.
EXPECTED_ROLE_ASSIGNMENTS = {
    ("appPrincipalId", STORAGE_BLOB_DATA_OWNER, STORAGE_ACCOUNT),
    ("appPrincipalId", STORAGE_QUEUE_DATA_CONTRIBUTOR, STORAGE_ACCOUNT),
    ("appPrincipalId", STORAGE_TABLE_DATA_CONTRIBUTOR, STORAGE_ACCOUNT),
    ("appPrincipalId", KEY_VAULT_SECRETS_USER, "Microsoft.KeyVault/vaults"),
    ("appPrincipalId", MONITORING_METRICS_PUBLISHER, "Microsoft.Insights/components"),
    # Event Grid system topic identity: dead-letter writes, scoped to that one container.
    ("eventGridPrincipalId", STORAGE_BLOB_DATA_CONTRIBUTOR, BLOB_CONTAINER),
}

# App settings the platform needs besides the code's SETTINGS.
STORAGE_IDENTITY_SUFFIXES = ("blobServiceUri", "queueServiceUri", "tableServiceUri", "credential", "clientId")
INFRA_APP_SETTINGS = {
    *(f"AzureWebJobsStorage__{suffix}" for suffix in STORAGE_IDENTITY_SUFFIXES),
    *(f"{STORAGE_CONNECTION}__{suffix}" for suffix in STORAGE_IDENTITY_SUFFIXES),
    "AZURE_CLIENT_ID",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}
# Rejected by Flex Consumption (functionAppConfig replaces them) or key-based.
FORBIDDEN_APP_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "APPINSIGHTS_INSTRUMENTATIONKEY",
    "AzureWebJobsStorage",
    STORAGE_CONNECTION,
}

# main.bicep outputs the operator and the post-deploy hook rely on.
REQUIRED_OUTPUTS = {
    "AZURE_RESOURCE_GROUP",
    "AZURE_FUNCTION_APP_NAME",
    "FUNCTION_APP_URL",
    "ENFACT_WEBHOOK_URL",
    "BLOB_TRIGGER_WEBHOOK_URL",
    "BLOB_TRIGGER_FUNCTION_NAME",
    "STORAGE_ACCOUNT_NAME",
    "INBOX_CONTAINER",
    "ARCHIVE_CONTAINER",
    "QUARANTINE_CONTAINER",
    "DEPLOYMENT_CONTAINER",
    "DEAD_LETTER_CONTAINER",
    "LEDGER_TABLE",
    "ENFACT_QUEUE",
    "KEY_VAULT_NAME",
    "KEY_VAULT_URI",
    "EVENTGRID_SYSTEM_TOPIC_NAME",
}
HOOK_INPUTS = {
    "AZURE_RESOURCE_GROUP",
    "AZURE_FUNCTION_APP_NAME",
    "EVENTGRID_SYSTEM_TOPIC_NAME",
    "STORAGE_ACCOUNT_NAME",
    "INBOX_CONTAINER",
    "DEAD_LETTER_CONTAINER",
    "BLOB_TRIGGER_FUNCTION_NAME",
    "KEY_VAULT_NAME",
    "ENFACT_WEBHOOK_URL",
}

SETTING_BY_ENV = {setting.env: setting for setting in SETTINGS}
_PARSER = BicepParser()


# --------------------------------------------------------------------------------------------
# helpers over pycep's JSON
# --------------------------------------------------------------------------------------------


class Template:
    """One parsed Bicep file with name resolution through its parameters and variables."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rel = path.relative_to(INFRA).as_posix()
        self.text = path.read_text(encoding="utf-8")
        self.json: dict[str, Any] = _PARSER.parse(text=self.text)
        self.params: dict[str, Any] = self.json.get("parameters") or {}
        self.vars: dict[str, Any] = self.json.get("variables") or {}
        self.resources: dict[str, Any] = self.json.get("resources") or {}
        self.modules: dict[str, Any] = self.json.get("modules") or {}
        self.outputs: dict[str, Any] = self.json.get("outputs") or {}

    def resources_of_type(self, resource_type: str, *, existing: bool | None = False) -> dict[str, dict]:
        return {
            name: res
            for name, res in self.resources.items()
            if res["type"] == resource_type and (existing is None or res["existing"] == existing)
        }

    def one(self, resource_type: str) -> tuple[str, dict]:
        found = self.resources_of_type(resource_type)
        assert len(found) == 1, f"{self.rel}: expected one {resource_type}, found {sorted(found)}"
        return next(iter(found.items()))

    def default(self, param: str) -> Any:
        assert param in self.params, f"{self.rel}: no parameter {param!r}"
        return self.params[param].get("default")

    def has_default(self, param: str) -> bool:
        """pycep gives `default: None` to a parameter declared without one."""
        return param in self.params and self.params[param].get("default") is not None

    def is_secure(self, param: str) -> bool:
        return any(d["type"] == "secure" for d in self.params[param]["decorators"])

    def resolve(self, value: Any) -> Any:
        """A parameter (→ its default) or variable (→ its value) name, else the value itself."""
        for _ in range(10):
            if isinstance(value, str) and value in self.params:
                value = self.params[value].get("default")
            elif isinstance(value, str) and value in self.vars:
                value = self.vars[value]["value"]
            else:
                break
        return value

    def interpolate(self, text: str) -> str:
        """Substitute plain ``${identifier}`` references by their resolved value."""

        def sub(match: re.Match[str]) -> str:
            resolved = self.resolve(match.group(1))
            return match.group(0) if resolved is None or resolved == match.group(1) else str(resolved)

        return re.sub(r"\$\{([A-Za-z_]\w*)\}", sub, text)


def body(resource: dict) -> dict:
    """The resource's object, through `[for …: …]` loops and `if (…)` conditions."""
    config = resource["config"]
    while isinstance(config, dict) and "config" in config and ("loop_type" in config or "condition" in config):
        config = config["config"]
    return config


def loop_of(resource_or_value: dict) -> dict | None:
    config = resource_or_value.get("config", resource_or_value)
    return config.get("loop_type") if isinstance(config, dict) else None


def walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


def is_not_empty_condition(condition: Any, operand: str) -> bool:
    """`!empty(operand)` as pycep represents it."""
    try:
        operator = condition["operator"]
        function = operator["operands"]["bool_value"]["function"]
        return operator["type"] == "not" and function["type"] == "empty" and function["parameters"]["item_to_test"] == operand
    except (KeyError, TypeError):
        return False


@pytest.fixture(scope="module")
def templates() -> dict[str, Template]:
    parsed = [Template(path) for path in BICEP_FILES]
    return {template.rel: template for template in parsed}


@pytest.fixture(scope="module")
def main(templates: dict[str, Template]) -> Template:
    return templates["main.bicep"]


@pytest.fixture(scope="module")
def storage(templates: dict[str, Template]) -> Template:
    return templates["modules/storage.bicep"]


@pytest.fixture(scope="module")
def keyvault(templates: dict[str, Template]) -> Template:
    return templates["modules/keyvault.bicep"]


@pytest.fixture(scope="module")
def functionapp(templates: dict[str, Template]) -> Template:
    return templates["modules/functionapp.bicep"]


@pytest.fixture(scope="module")
def roles(templates: dict[str, Template]) -> Template:
    return templates["modules/roles.bicep"]


@pytest.fixture(scope="module")
def subscription_stage(templates: dict[str, Template]) -> Template:
    return templates[SUBSCRIPTION_STAGE]


@pytest.fixture(scope="module")
def app_settings(functionapp: Template) -> dict[str, Any]:
    """The function app's app settings as name → unresolved value, read from the site itself."""
    _, site = functionapp.one("Microsoft.Web/sites")
    settings = body(site)["properties"]["siteConfig"]["appSettings"]
    loop = settings["loop_type"]
    assert loop["type"] == "object", "appSettings must be built with [for … in items(<object var>)]"
    assert settings["config"] == {"name": f"{loop['detail']['item_name']}.key", "value": f"{loop['detail']['item_name']}.value"}
    values = functionapp.vars[loop["detail"]["object_name"]]["value"]
    assert isinstance(values, dict)
    return values


# --------------------------------------------------------------------------------------------
# parsing and composition
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_bicep_file_parses(path: Path) -> None:
    try:
        parsed = _PARSER.parse(text=path.read_text(encoding="utf-8"))
    except Exception as exc:  # lark raises several unrelated exception types
        pytest.fail(f"{path.relative_to(ROOT)} does not parse with pycep: {type(exc).__name__}: {exc}")
    assert parsed.get("resources") or parsed.get("modules"), f"{path.relative_to(ROOT)} declares nothing"


def test_infra_has_the_expected_files() -> None:
    found = {path.relative_to(INFRA).as_posix() for path in BICEP_FILES}
    assert {"main.bicep", SUBSCRIPTION_STAGE} | EXPECTED_MODULES <= found


def test_main_composes_local_modules_only(main: Template, templates: dict[str, Template]) -> None:
    assert main.json["globals"]["scope"]["value"] == "subscription"
    paths = {module["detail"]["path"] for module in main.modules.values()}
    assert paths == EXPECTED_MODULES
    for module in main.modules.values():
        assert module["type"] == "local", f"registry module {module['detail']} cannot be resolved offline"
        assert (INFRA / module["detail"]["path"]).is_file()
        assert module["config"]["scope"] == "rg"
    # The subscription stage is deployed by the post-deploy hook, never by main.bicep.
    assert SUBSCRIPTION_STAGE not in paths
    for template in templates.values():
        assert "br:" not in template.text and "br/" not in template.text, f"{template.rel} uses a registry module"


def test_module_parameters_passed_by_main_exist(main: Template, templates: dict[str, Template]) -> None:
    for name, module in main.modules.items():
        target = templates[module["detail"]["path"]]
        passed = set(module["config"]["params"])
        assert passed <= set(target.params), f"module {name} passes unknown parameters {passed - set(target.params)}"
        required = {p for p in target.params if not target.has_default(p)}
        assert required <= passed, f"module {name} misses required parameters {required - passed}"


# --------------------------------------------------------------------------------------------
# checkov
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkov_report() -> dict[str, Any]:
    executable = Path(sys.executable).parent / "checkov"
    if not executable.exists():
        found = shutil.which("checkov")
        if not found:
            pytest.fail("checkov is not installed next to the interpreter nor on PATH")
        executable = Path(found)
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "ERROR"}
    proc = subprocess.run(
        [str(executable), "--framework", "bicep", "-d", str(INFRA), "-o", "json", "--skip-download"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # 0 = no failed check, 1 = failed checks; anything else is checkov itself failing.
    assert proc.returncode in (0, 1), f"checkov exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout)
    if isinstance(report, list):
        report = next(r for r in report if r.get("check_type") == "bicep")
    assert report.get("check_type") == "bicep", f"unexpected checkov output: {proc.stdout[:500]}"
    return report


def test_checkov_parses_every_file(checkov_report: dict[str, Any]) -> None:
    assert checkov_report["summary"]["parsing_errors"] == 0, checkov_report["results"].get("parsing_errors")
    assert checkov_report["summary"]["resource_count"] > 0


def test_checkov_reports_no_failed_check(checkov_report: dict[str, Any]) -> None:
    failed = checkov_report["results"].get("failed_checks", [])
    lines = [
        f"{c['check_id']} {c['check_name']!r} on {c['resource']} in infra{c['file_path']} lines {c['file_line_range']}"
        for c in failed
    ]
    assert not lines, "checkov failed checks (fix them, or skip in the resource with a justification):\n" + "\n".join(lines)


SKIP_COMMENT = re.compile(r"checkov:skip=([A-Za-z_\d]+)(?::(.*))?")


def test_every_skip_has_a_justification(templates: dict[str, Template]) -> None:
    bad = []
    for template in templates.values():
        for number, line in enumerate(template.text.splitlines(), 1):
            match = SKIP_COMMENT.search(line)
            if not match:
                continue
            if not line.lstrip().startswith("//"):
                bad.append(f"{template.rel}:{number}: skip is not a // comment")
            reason = (match.group(2) or "").strip()
            if len(reason.split()) < 5:
                bad.append(f"{template.rel}:{number}: {match.group(1)} has no one-line justification")
    assert not bad, "\n".join(bad)


def test_every_skip_comment_suppresses_a_check(checkov_report: dict[str, Any], templates: dict[str, Template]) -> None:
    skipped = {
        (c["file_path"].lstrip("/"), c["check_id"]) for c in checkov_report["results"].get("skipped_checks", [])
    }
    for c in checkov_report["results"].get("skipped_checks", []):
        assert (c["check_result"].get("suppress_comment") or "").strip(), f"{c['check_id']} skipped without a reason"
    stale = [
        f"{template.rel}: {match.group(1)}"
        for template in templates.values()
        for match in SKIP_COMMENT.finditer(template.text)
        if (template.rel, match.group(1)) not in skipped
    ]
    assert not stale, f"skip comments that suppress nothing (remove them): {stale}"


# --------------------------------------------------------------------------------------------
# code ↔ infra: settings and secrets
# --------------------------------------------------------------------------------------------


def test_every_setting_the_code_reads_is_an_app_setting(app_settings: dict[str, Any]) -> None:
    missing = [setting.env for setting in SETTINGS if setting.env not in app_settings]
    assert not missing, f"settings read by shared/config.py but not set in modules/functionapp.bicep: {missing}"


def test_no_unknown_or_forbidden_app_setting(app_settings: dict[str, Any]) -> None:
    unknown = set(app_settings) - set(SETTING_BY_ENV) - INFRA_APP_SETTINGS
    assert not unknown, f"app settings nothing reads (typo?): {sorted(unknown)}"
    assert not FORBIDDEN_APP_SETTINGS & set(app_settings)
    # Secrets come from Key Vault, never from app settings.
    assert not {env_var_for(name) for name in SECRET_NAMES} & set(app_settings)


def test_storage_connections_are_identity_based(app_settings: dict[str, Any], functionapp: Template) -> None:
    for prefix in ("AzureWebJobsStorage", STORAGE_CONNECTION):
        assert app_settings[f"{prefix}__blobServiceUri"] == "blobEndpoint"
        assert app_settings[f"{prefix}__queueServiceUri"] == "queueEndpoint"
        assert app_settings[f"{prefix}__tableServiceUri"] == "tableEndpoint"
        assert app_settings[f"{prefix}__credential"] == "managedidentity"
        assert app_settings[f"{prefix}__clientId"] == "identityClientId"
    assert app_settings["AZURE_CLIENT_ID"] == "identityClientId"
    assert app_settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=${identityClientId};Authorization=AAD"
    assert app_settings["APPLICATIONINSIGHTS_CONNECTION_STRING"] == "applicationInsightsConnectionString"
    assert app_settings["KEY_VAULT_URL"] == "keyVaultUri"
    assert app_settings["SECRETS_FROM_ENVIRONMENT"] == "false"
    for param in ("blobEndpoint", "queueEndpoint", "tableEndpoint", "identityClientId", "keyVaultUri"):
        assert param in functionapp.params and not functionapp.has_default(param)


def _main_source_for(main: Template, module_param: str) -> Any:
    return main.modules["functionApp"]["config"]["params"].get(module_param)


def test_app_setting_defaults_are_valid_for_the_code(app_settings: dict[str, Any], functionapp: Template, main: Template) -> None:
    """Every literal or default that ends up in a setting parses with the code's own parser;
    the settings without one are wired by main.bicep from another module's output."""
    for env, setting in SETTING_BY_ENV.items():
        if env not in app_settings:
            continue  # reported by test_every_setting_the_code_reads_is_an_app_setting
        value = app_settings[env]
        candidates = []
        if value in functionapp.params:
            if functionapp.has_default(value):
                candidates.append(("modules/functionapp.bicep", functionapp.default(value)))
            source = _main_source_for(main, value)
            if isinstance(source, str) and main.has_default(source):
                candidates.append(("main.bicep", main.default(source)))
            if not candidates:
                assert isinstance(source, str) and ".outputs." in source, f"{env}: no value and not wired from a module output"
        else:
            assert isinstance(value, str) and "${" not in value, f"{env}: unexpected value {value!r}"
            candidates.append(("literal", value))
        for where, raw in candidates:
            try:
                setting.parse(str(raw).strip())
            except ValueError as exc:
                pytest.fail(f"{env}: {where} value {raw!r} is rejected by shared/config.py: {exc}")


def test_operator_defaults_match_the_code_defaults(app_settings: dict[str, Any], functionapp: Template, main: Template) -> None:
    for env, setting in SETTING_BY_ENV.items():
        param = app_settings.get(env)  # a missing one is reported by the test above
        if isinstance(param, str) and functionapp.has_default(param):
            assert functionapp.params[param]["default"] == setting.default, f"{env}: module default drifted from the code"
            source = _main_source_for(main, param)
            if isinstance(source, str) and source in main.params:
                assert main.default(source) == setting.default, f"{env}: main.bicep default drifted from the code"


def test_storage_names_match_the_code_defaults(storage: Template, main: Template, app_settings: dict[str, Any]) -> None:
    expected = {
        "INBOX_CONTAINER": ("inboxContainerName", "storage.outputs.inboxContainerName"),
        "ARCHIVE_CONTAINER": ("archiveContainerName", "storage.outputs.archiveContainerName"),
        "QUARANTINE_CONTAINER": ("quarantineContainerName", "storage.outputs.quarantineContainerName"),
        "LEDGER_TABLE": ("ledgerTableName", "storage.outputs.ledgerTableName"),
        "ENFACT_QUEUE": ("enfactQueueName", "storage.outputs.enfactQueueName"),
    }
    for env, (param, wiring) in expected.items():
        assert storage.default(param) == SETTING_BY_ENV[env].default, f"{env}: storage default drifted from the code"
        assert app_settings[env] == param
        assert _main_source_for(main, param) == wiring, f"{env} must come from the storage module output"
    assert _main_source_for(main, "keyVaultUri") == "keyVault.outputs.uri"


def test_every_secret_the_code_reads_is_declared_in_key_vault(keyvault: Template) -> None:
    name, secret = keyvault.one("Microsoft.KeyVault/vaults/secrets")
    loop = loop_of(secret)
    assert loop and loop["type"] == "array", "secrets are declared with one loop over the secrets variable"
    entries = keyvault.vars[loop["detail"]["array_name"]]["value"]
    names = [entry["name"] for entry in entries]
    assert sorted(names) == sorted(SECRET_NAMES), f"Key Vault secrets {names} != code's {SECRET_NAMES}"
    assert len(set(names)) == len(names)
    # Empty value = "set after deployment": the resource is then not deployed at all, so a
    # re-provision never blanks a value set by an operator.
    item = loop["detail"]["item_name"]
    assert is_not_empty_condition(secret["config"]["condition"], f"{item}.value")
    assert body(secret)["name"] == f"{item}.name"
    assert body(secret)["properties"]["value"] == f"{item}.value"
    for entry in entries:
        param = entry["value"]
        assert keyvault.is_secure(param), f"{param} must be @secure()"
        assert keyvault.default(param) == "", f"{param} must default to '' (set after deployment)"


def test_secret_parameters_stay_secret(main: Template, keyvault: Template, templates: dict[str, Template]) -> None:
    secure_in_main = {name for name in main.params if main.is_secure(name)}
    module_params = main.modules["keyVault"]["config"]["params"]
    vault_secret_params = {entry["value"] for entry in keyvault.vars["secrets"]["value"]}
    assert vault_secret_params <= secure_in_main
    for param in vault_secret_params:
        assert module_params[param] == param
        assert main.default(param) == ""
    parameters_file = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))
    assert not secure_in_main & set(parameters_file["parameters"]), "secrets must not be mapped from the azd .env"
    for template in templates.values():
        secure = {name for name in template.params if template.is_secure(name)}
        for output_name, output in template.outputs.items():
            text = json.dumps(output["value"])
            assert not any(re.search(rf"\b{re.escape(p)}\b", text) for p in secure), f"{template.rel} output {output_name} leaks a secret"


# --------------------------------------------------------------------------------------------
# security properties
# --------------------------------------------------------------------------------------------


def test_storage_account_is_locked_down(storage: Template) -> None:
    _, account = storage.one(STORAGE_ACCOUNT)
    props = body(account)["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["defaultToOAuthAuthentication"] is True
    assert props["allowCrossTenantReplication"] is False
    _, blob_service = storage.one("Microsoft.Storage/storageAccounts/blobServices")
    blob_props = body(blob_service)["properties"]
    for policy in ("deleteRetentionPolicy", "containerDeleteRetentionPolicy"):
        assert blob_props[policy]["enabled"] is True, f"{policy} (soft delete) must be enabled"
        assert storage.resolve(blob_props[policy]["days"]) >= 7


def test_storage_declares_every_container_table_and_queue(storage: Template) -> None:
    _, containers = storage.one(BLOB_CONTAINER)
    loop = loop_of(containers)
    names = {storage.resolve(n) for n in storage.vars[loop["detail"]["array_name"]]["value"]}
    assert {
        SETTING_BY_ENV["INBOX_CONTAINER"].default,
        SETTING_BY_ENV["ARCHIVE_CONTAINER"].default,
        SETTING_BY_ENV["QUARANTINE_CONTAINER"].default,
        storage.default("deploymentContainerName"),
        storage.default("deadLetterContainerName"),
    } <= names
    assert body(containers)["properties"]["publicAccess"] == "None"
    tables = {storage.resolve(body(r)["name"]) for r in storage.resources_of_type("Microsoft.Storage/storageAccounts/tableServices/tables").values()}
    assert SETTING_BY_ENV["LEDGER_TABLE"].default in tables
    queues = {
        storage.interpolate(storage.resolve(body(r)["name"]))
        for r in storage.resources_of_type("Microsoft.Storage/storageAccounts/queueServices/queues").values()
    }
    queue = SETTING_BY_ENV["ENFACT_QUEUE"].default
    assert {queue, f"{queue}-poison"} <= queues


def test_key_vault_is_rbac_with_purge_protection(keyvault: Template) -> None:
    _, vault = keyvault.one("Microsoft.KeyVault/vaults")
    props = body(vault)["properties"]
    assert props["enableRbacAuthorization"] is True
    assert "accessPolicies" not in props
    assert props["enableSoftDelete"] is True
    assert props["enablePurgeProtection"] is True
    assert keyvault.resolve(props["softDeleteRetentionInDays"]) >= 7
    _, audit = keyvault.one("Microsoft.Insights/diagnosticSettings")
    assert body(audit)["scope"] == "vault"


def test_monitoring_accepts_entra_ingestion_only(templates: dict[str, Template]) -> None:
    monitoring = templates["modules/monitoring.bicep"]
    _, component = monitoring.one("Microsoft.Insights/components")
    assert body(component)["properties"]["DisableLocalAuth"] is True
    assert body(component)["properties"]["WorkspaceResourceId"] == "workspace.id"
    _, workspace = monitoring.one("Microsoft.OperationalInsights/workspaces")
    assert body(workspace)["properties"]["features"]["disableLocalAuth"] is True


def test_function_app_is_flex_python_with_user_assigned_identity(functionapp: Template) -> None:
    _, plan = functionapp.one("Microsoft.Web/serverfarms")
    assert body(plan)["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert body(plan)["properties"]["reserved"] is True
    _, site = functionapp.one("Microsoft.Web/sites")
    site = body(site)
    assert "linux" in site["kind"]
    assert site["identity"]["type"] == "UserAssigned"
    props = site["properties"]
    assert props["httpsOnly"] is True
    assert props["siteConfig"]["minTlsVersion"] == "1.2"
    assert props["siteConfig"]["ftpsState"] == "Disabled"
    config = props["functionAppConfig"]
    assert config["runtime"]["name"] == "python"
    assert functionapp.resolve(config["runtime"]["version"]) == "3.11"
    storage_cfg = config["deployment"]["storage"]
    assert storage_cfg["type"] == "blobContainer"
    assert storage_cfg["authentication"] == {"type": "UserAssignedIdentity", "userAssignedIdentityResourceId": "identityId"}
    basic_auth = functionapp.resources_of_type("Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {body(r)["name"]: body(r)["properties"]["allow"] for r in basic_auth.values()} == {"ftp": False, "scm": False}


def test_role_assignments_are_exactly_the_listed_ones(templates: dict[str, Template], roles: Template) -> None:
    found = []
    for template in templates.values():
        assert not template.resources_of_type("Microsoft.Authorization/roleDefinitions"), "no custom roles"
        for name, assignment in template.resources_of_type("Microsoft.Authorization/roleAssignments").items():
            assert template is roles, f"{template.rel}: role assignment {name} belongs in modules/roles.bicep"
            config = body(assignment)
            function = config["properties"]["roleDefinitionId"]["function"]
            assert function["type"] == "subscription_resource_id"
            assert function["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
            role = template.resolve(function["parameters"]["resource_name_1"])
            scope = config.get("scope")
            assert scope in template.resources, f"{name}: scope must be a resource of the module (not the group)"
            assert template.resources[scope]["existing"] is True
            assert config["properties"]["principalType"] == "ServicePrincipal"
            found.append((config["properties"]["principalId"], role, template.resources[scope]["type"]))
    assert len(found) == len(set(found)), "duplicate role assignment"
    assert set(found) == EXPECTED_ROLE_ASSIGNMENTS, (
        f"unexpected: {set(found) - EXPECTED_ROLE_ASSIGNMENTS}; missing: {EXPECTED_ROLE_ASSIGNMENTS - set(found)}"
    )


def test_roles_are_granted_to_the_right_principals(main: Template) -> None:
    params = main.modules["roles"]["config"]["params"]
    assert params["appPrincipalId"] == "identity.outputs.principalId"
    assert params["eventGridPrincipalId"] == "eventGrid.outputs.principalId"
    # The app starts only once its permissions exist.
    assert "roles" in main.modules["functionApp"]["config"]["dependsOn"]


def test_dead_letter_role_is_scoped_to_the_dead_letter_container(roles: Template, main: Template) -> None:
    container = roles.resources["deadLetterContainer"]
    assert body(container)["name"] == "deadLetterContainerName"
    assert main.modules["roles"]["config"]["params"]["deadLetterContainerName"] == "storage.outputs.deadLetterContainerName"


def test_no_keys_or_connection_strings_anywhere(templates: dict[str, Template]) -> None:
    # Secondary, text-level check (interpolated strings are opaque to pycep): the only list*
    # call is ARM reading the host's blobs_extension key in the subscription stage.
    for template in templates.values():
        for forbidden in ("AccountKey=", "SharedAccessSignature", "listAccountSas", "listServiceSas", "InstrumentationKey="):
            assert forbidden not in template.text, f"{template.rel} contains {forbidden}"
        calls = re.findall(r"\blist\w*\(", template.text)
        if template.rel == SUBSCRIPTION_STAGE:
            assert calls == ["listKeys("]
            assert re.search(r"listKeys\('\$\{functionApp\.id\}/host/default', '[\d-]+'\)\.systemKeys\.blobs_extension", template.text)
        else:
            assert not calls, f"{template.rel} calls {calls}"


# --------------------------------------------------------------------------------------------
# Event Grid
# --------------------------------------------------------------------------------------------


def test_system_topic_publishes_the_storage_account(templates: dict[str, Template], main: Template) -> None:
    eventgrid = templates["modules/eventgrid.bicep"]
    _, topic = eventgrid.one("Microsoft.EventGrid/systemTopics")
    assert body(topic)["properties"] == {"source": "storageAccountId", "topicType": "Microsoft.Storage.StorageAccounts"}
    assert body(topic)["identity"] == {"type": "SystemAssigned"}
    assert main.modules["eventGrid"]["config"]["params"]["storageAccountId"] == "storage.outputs.id"
    # Only the second stage declares the subscription.
    for template in templates.values():
        subscriptions = template.resources_of_type("Microsoft.EventGrid/systemTopics/eventSubscriptions")
        assert not subscriptions or template.rel == SUBSCRIPTION_STAGE


def test_subscription_delivers_inbox_blob_created_to_the_blob_trigger(subscription_stage: Template, main: Template, storage: Template) -> None:
    _, subscription = subscription_stage.one("Microsoft.EventGrid/systemTopics/eventSubscriptions")
    config = body(subscription)
    assert config["parent"] == "systemTopic"
    assert subscription_stage.resources["systemTopic"]["existing"] is True
    props = config["properties"]
    inbox = SETTING_BY_ENV["INBOX_CONTAINER"].default
    assert subscription_stage.default("inboxContainerName") == inbox == storage.default("inboxContainerName")
    assert props["filter"]["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]
    assert subscription_stage.interpolate(props["filter"]["subjectBeginsWith"]) == f"/blobServices/default/containers/{inbox}/"
    assert props["filter"].get("subjectEndsWith") in (None, "")
    assert props["destination"]["endpointType"] == "WebHook"
    function_name = subscription_stage.default("blobTriggerFunctionName")
    assert function_name == main.vars["blobTriggerFunctionName"]["value"] == "upload_document"
    endpoint = props["destination"]["properties"]["endpointUrl"]
    assert endpoint.startswith("${webhookBaseUrl}&code=")
    assert subscription_stage.interpolate(subscription_stage.vars["webhookBaseUrl"]["value"]) == (
        "https://${functionApp.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.upload_document"
    )
    dead_letter = props["deadLetterWithResourceIdentity"]
    assert dead_letter["identity"] == {"type": "SystemAssigned"}
    assert dead_letter["deadLetterDestination"]["properties"]["blobContainerName"] == "deadLetterContainerName"
    assert subscription_stage.default("deadLetterContainerName") == storage.default("deadLetterContainerName")


# --------------------------------------------------------------------------------------------
# azd wiring: outputs, parameters, azure.yaml, post-deploy hook
# --------------------------------------------------------------------------------------------


def test_outputs_give_the_operator_what_it_needs_and_no_key(main: Template) -> None:
    assert REQUIRED_OUTPUTS <= set(main.outputs)
    for name, output in main.outputs.items():
        text = json.dumps(output["value"])
        assert "code=" not in text and "listKeys" not in text and "onnectionString" not in text, name
    assert main.outputs["ENFACT_WEBHOOK_URL"]["value"].endswith("/api/enfact/invoices")
    assert main.outputs["BLOB_TRIGGER_WEBHOOK_URL"]["value"].endswith(
        "/runtime/webhooks/blobs?functionName=Host.Functions.${blobTriggerFunctionName}"
    )
    assert main.outputs["KEY_VAULT_URI"]["value"] == "keyVault.outputs.uri"


def test_parameters_file_matches_main(main: Template, app_settings: dict[str, Any]) -> None:
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert set(parameters) <= set(main.params), f"unknown parameters: {set(parameters) - set(main.params)}"
    required = {name for name in main.params if not main.has_default(name)}
    assert required <= set(parameters)
    assert parameters["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert parameters["location"]["value"] == "${AZURE_LOCATION}"
    module_params = main.modules["functionApp"]["config"]["params"]
    settings_by_module_param = {value: env for env, value in app_settings.items() if isinstance(value, str)}
    for name, spec in parameters.items():
        match = re.fullmatch(r"\$\{([A-Z_][A-Z0-9_]*)(?:=(.*))?\}", spec["value"])
        assert match, f"{name}: expected an azd ${{VAR}} or ${{VAR=default}} reference"
        variable, default = match.groups()
        if default is not None:
            assert default == main.default(name), f"{name}: parameters-file default drifted from main.bicep"
        module_param = next((p for p, v in module_params.items() if v == name), None)
        env = settings_by_module_param.get(module_param)
        if env:
            assert variable == env, f"{name}: azd variable should be named like the app setting {env}"


def test_azure_yaml_provisions_deploys_and_hooks() -> None:
    config = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))
    assert config["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    services = config["services"]
    assert len(services) == 1
    (service_name, service), = services.items()
    assert service["host"] == "function" and service["language"] in ("python", "py")
    assert (ROOT / service["project"]).is_dir()
    # azd deploy finds the app by this tag.
    main_text = (INFRA / "main.bicep").read_text(encoding="utf-8")
    assert f"'azd-service-name': '{service_name}'" in main_text
    hook = config["hooks"]["postdeploy"]
    assert hook["posix"]["run"] == "./scripts/azd-postdeploy.sh" and hook["posix"]["shell"] == "sh"
    assert hook["windows"]["run"] == "./scripts/azd-postdeploy.ps1" and hook["windows"]["shell"] == "pwsh"
    assert POSTDEPLOY_SH.is_file() and POSTDEPLOY_PS1.is_file()
    assert os.access(POSTDEPLOY_SH, os.X_OK)


@pytest.mark.parametrize("script", [POSTDEPLOY_SH, POSTDEPLOY_PS1], ids=lambda p: p.name)
def test_hook_scripts_use_outputs_and_know_every_secret(script: Path, main: Template) -> None:
    text = script.read_text(encoding="utf-8")
    assert HOOK_INPUTS <= set(main.outputs)
    for name in HOOK_INPUTS:
        assert name in text, f"{script.name} does not use {name}"
    for secret in SECRET_NAMES:
        assert secret in text, f"{script.name} does not remind the operator of {secret}"
    assert "infra" in text and SUBSCRIPTION_STAGE in text
    assert "systemKeys.blobs_extension != `null`" in text  # asks whether the key exists, never for it


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_posix_hook_syntax(shell: str) -> None:
    if not shutil.which(shell):
        pytest.skip(f"{shell} not available")
    proc = subprocess.run([shell, "-n", str(POSTDEPLOY_SH)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


FAKE_AZ = """#!/bin/sh
printf '%s\\n' "$*" >> "$FAKE_LOG"
case "$1 $2" in
  "functionapp keys")
    n=$(cat "$FAKE_STATE" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "$FAKE_STATE"
    if [ "$n" -ge 3 ]; then echo true; else echo false; fi ;;
  "deployment group") exit 0 ;;
  "keyvault secret") printf 'inqom-username\\ninqom-password\\n' ;;
  *) exit 2 ;;
esac
"""


def _run_hook(tmp_path: Path, **overrides: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "az").write_text(FAKE_AZ)
    (bin_dir / "az").chmod(0o755)
    # Never reach out: the hook pokes the app's URL with curl while it waits for the key.
    (bin_dir / "curl").write_text('#!/bin/sh\nprintf \'curl %s\\n\' "$*" >> "$FAKE_LOG"\n')
    (bin_dir / "curl").chmod(0o755)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        "FAKE_LOG": str(tmp_path / "az.log"),
        "FAKE_STATE": str(tmp_path / "az.state"),
        "EVENTGRID_KEY_WAIT_SECONDS": "0",
        "EVENTGRID_KEY_WAIT_ATTEMPTS": "5",
        "AZURE_RESOURCE_GROUP": "rg-test",
        "AZURE_FUNCTION_APP_NAME": "func-test",
        "EVENTGRID_SYSTEM_TOPIC_NAME": "evgt-test",
        "STORAGE_ACCOUNT_NAME": "sttest",
        "INBOX_CONTAINER": "inbox",
        "DEAD_LETTER_CONTAINER": "eventgrid-deadletter",
        "BLOB_TRIGGER_FUNCTION_NAME": "upload_document",
        "KEY_VAULT_NAME": "kv-test",
        "ENFACT_WEBHOOK_URL": "https://func-test.azurewebsites.net/api/enfact/invoices",
    }
    env.update(overrides)
    env = {k: v for k, v in env.items() if v is not None and v != "<unset>"}
    return subprocess.run(["sh", str(POSTDEPLOY_SH)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)


def test_posix_hook_waits_for_the_key_then_deploys_the_subscription(tmp_path: Path) -> None:
    proc = _run_hook(tmp_path)
    assert proc.returncode == 0, proc.stderr
    calls = (tmp_path / "az.log").read_text().splitlines()
    key_checks = [c for c in calls if c.startswith("functionapp keys list")]
    assert len(key_checks) == 3
    assert all("--query systemKeys.blobs_extension != `null`" in c for c in key_checks)
    deploy = next(c for c in calls if c.startswith("deployment group create"))
    assert "--resource-group rg-test" in deploy
    assert f"--template-file {POSTDEPLOY_SH.parent}/../infra/{SUBSCRIPTION_STAGE}" in deploy
    for expected in (
        "systemTopicName=evgt-test",
        "functionAppName=func-test",
        "blobTriggerFunctionName=upload_document",
        "inboxContainerName=inbox",
        "storageAccountName=sttest",
        "deadLetterContainerName=eventgrid-deadletter",
    ):
        assert expected in deploy
    assert "code=" not in "\n".join(calls)
    missing = [name for name in SECRET_NAMES if name not in ("inqom-username", "inqom-password")]
    assert f"secrets still to set in kv-test: {' '.join(missing)}" in proc.stdout


def test_posix_hook_fails_without_provision_outputs(tmp_path: Path) -> None:
    proc = _run_hook(tmp_path, EVENTGRID_SYSTEM_TOPIC_NAME="<unset>")
    assert proc.returncode != 0
    assert "EVENTGRID_SYSTEM_TOPIC_NAME is not set" in proc.stderr


def test_posix_hook_gives_up_when_the_key_never_appears(tmp_path: Path) -> None:
    proc = _run_hook(tmp_path, EVENTGRID_KEY_WAIT_ATTEMPTS="2")
    assert proc.returncode != 0
    assert "no blobs_extension key after 2 attempts" in proc.stderr
    assert not any(c.startswith("deployment") for c in (tmp_path / "az.log").read_text().splitlines())
