"""Infrastructure tests: the Bicep templates under infra/ parse, pass checkov, match the code.

* every ``.bicep`` file parses with ``pycep-parser`` (the parser checkov itself uses);
* ``checkov --framework bicep -d infra`` (run once per module) reports no failed check; every
  exception is an in-resource ``// checkov:skip=ID: justification`` comment;
* every setting ``shared.config.SETTINGS`` reads is an app setting of the function app, and
  every secret ``shared.secrets.SECRET_NAMES`` reads is declared in the Key Vault module;
* the security properties the deployment promises hold in the parsed templates (no shared key,
  no public blob access, TLS 1.2, RBAC vault, exactly the listed roles at their scopes, Event Grid
  filtered on the inbox, a WORM archive), and the azd wiring (azure.yaml, parameters, post-deploy
  hook) is consistent;
* what the Bicep linter would warn about is absent (hard-coded cloud hosts, secret-looking
  parameter names), and nothing Flex Consumption deprecates is set;
* every alert rule and workbook query names only what the app really emits: metric names,
  attribute keys and values from ``shared.metrics``, log lines of ``shared/``, function names of
  ``functions/``, and documented columns of the platform tables.

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

from shared import metrics  # noqa: E402
from shared.config import SETTINGS, STORAGE_CONNECTION  # noqa: E402
from tests.support.once import once  # noqa: E402
from shared.observability import FIELDS as LOG_CONTEXT_FIELDS  # noqa: E402
from shared.secrets import SECRET_NAMES, env_var_for  # noqa: E402

INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
POSTDEPLOY_SH = ROOT / "scripts" / "azd-postdeploy.sh"
POSTDEPLOY_PS1 = ROOT / "scripts" / "azd-postdeploy.ps1"

EXPECTED_MODULES = {
    "modules/identity.bicep",
    "modules/monitoring.bicep",
    "modules/storage.bicep",
    "modules/hoststorage.bicep",
    "modules/keyvault.bicep",
    "modules/functionapp.bicep",
    "modules/roles.bicep",
    "modules/eventgrid.bicep",
    "modules/alerts.bicep",
    "modules/workbook.bicep",
    # issue 22: optional modules (protectDocumentsAccount, networkIsolation)
    "modules/protection.bicep",
    "modules/network.bicep",
}
SUBSCRIPTION_STAGE = "eventgrid-subscription.bicep"

# Built-in role definition ids (learn.microsoft.com/azure/role-based-access-control/built-in-roles).
STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
STORAGE_BLOB_DATA_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
STORAGE_QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
STORAGE_QUEUE_DATA_READER = "19e7f393-937e-4f77-808e-94535e297925"
STORAGE_QUEUE_DATA_MESSAGE_PROCESSOR = "8a0f0c08-91a1-4084-bc3d-661d67233fed"
STORAGE_QUEUE_DATA_MESSAGE_SENDER = "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a"
# issue 22: the custom archive role of modules/roles.bicep (its symbol stands for its id).
ARCHIVE_WRITER_ROLE = "archiveWriterRole"
ARCHIVE_OPERATOR_ROLE = "archiveOperatorRole"
CUSTOM_ROLES = (ARCHIVE_WRITER_ROLE, ARCHIVE_OPERATOR_ROLE)
STORAGE_TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
STORAGE_ACCOUNT_CONTRIBUTOR = "17d1049b-9a84-46fb-8f53-869881c3d3ab"
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
STORAGE_ACCOUNT = "Microsoft.Storage/storageAccounts"
BLOB_CONTAINER = "Microsoft.Storage/storageAccounts/blobServices/containers"
QUEUE = "Microsoft.Storage/storageAccounts/queueServices/queues"
TABLE = "Microsoft.Storage/storageAccounts/tableServices/tables"

# (principal parameter, role, scope resource in modules/roles.bicep): exactly these. The documents
# account's blobs, queues and the ledger table are granted per container / queue / table (issue 22:
# custom archive role instead of Owner, queue roles narrowed, table scoped to the ledger). The host
# account (AzureWebJobsStorage) gets account scope.
EXPECTED_ROLE_ASSIGNMENTS = {
    ("appPrincipalId", STORAGE_BLOB_DATA_OWNER, "inboxContainer"),
    ("appPrincipalId", ARCHIVE_WRITER_ROLE, "archiveContainer"),
    ("appPrincipalId", ARCHIVE_WRITER_ROLE, "ledgerBackupContainer"),  # the daily ledger export, create-only
    ("appPrincipalId", STORAGE_BLOB_DATA_CONTRIBUTOR, "quarantineContainer"),
    ("appPrincipalId", STORAGE_QUEUE_DATA_MESSAGE_SENDER, "enfactQueue"),
    ("appPrincipalId", STORAGE_QUEUE_DATA_READER, "enfactQueue"),
    ("appPrincipalId", STORAGE_QUEUE_DATA_MESSAGE_PROCESSOR, "enfactQueue"),
    ("appPrincipalId", STORAGE_QUEUE_DATA_MESSAGE_SENDER, "enfactPoisonQueue"),
    ("appPrincipalId", STORAGE_QUEUE_DATA_MESSAGE_SENDER, "blobTriggerPoisonQueue"),
    ("appPrincipalId", STORAGE_TABLE_DATA_CONTRIBUTOR, "ledgerTable"),
    ("appPrincipalId", STORAGE_BLOB_DATA_OWNER, "hostStorage"),
    ("appPrincipalId", STORAGE_QUEUE_DATA_CONTRIBUTOR, "hostStorage"),
    ("appPrincipalId", STORAGE_TABLE_DATA_CONTRIBUTOR, "hostStorage"),
    ("appPrincipalId", STORAGE_ACCOUNT_CONTRIBUTOR, "hostStorage"),
    ("appPrincipalId", KEY_VAULT_SECRETS_USER, "vault"),
    ("appPrincipalId", MONITORING_METRICS_PUBLISHER, "appInsights"),
    # Event Grid system topic identity: dead-letter writes, scoped to that one container.
    ("eventGridPrincipalId", STORAGE_BLOB_DATA_CONTRIBUTOR, "deadLetterContainer"),
    # Optional operator (operatorPrincipalId non-empty): what the CLI needs, no more.
    ("operatorPrincipalId", STORAGE_BLOB_DATA_CONTRIBUTOR, "inboxContainer"),
    ("operatorPrincipalId", STORAGE_BLOB_DATA_CONTRIBUTOR, "quarantineContainer"),
    ("operatorPrincipalId", ARCHIVE_OPERATOR_ROLE, "archiveContainer"),
    ("operatorPrincipalId", STORAGE_TABLE_DATA_CONTRIBUTOR, "ledgerTable"),
    ("operatorPrincipalId", STORAGE_BLOB_DATA_READER, "ledgerBackupContainer"),  # restore --from-blob
}
# Each scope: its resource type, the name parameter, and the documents or host account it lives in.
ROLE_SCOPES = {
    "inboxContainer": (BLOB_CONTAINER, "inboxContainerName"),
    "archiveContainer": (BLOB_CONTAINER, "archiveContainerName"),
    "quarantineContainer": (BLOB_CONTAINER, "quarantineContainerName"),
    "deadLetterContainer": (BLOB_CONTAINER, "deadLetterContainerName"),
    "ledgerBackupContainer": (BLOB_CONTAINER, "ledgerBackupContainerName"),
    "enfactQueue": (QUEUE, "enfactQueueName"),
    "enfactPoisonQueue": (QUEUE, "enfactPoisonQueueName"),
    "blobTriggerPoisonQueue": (QUEUE, "blobTriggerPoisonQueueName"),
    "ledgerTable": (TABLE, "ledgerTableName"),
    "hostStorage": (STORAGE_ACCOUNT, "hostStorageAccountName"),
    "vault": ("Microsoft.KeyVault/vaults", "keyVaultName"),
    "appInsights": ("Microsoft.Insights/components", "applicationInsightsName"),
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
# Deprecated on Flex Consumption (learn.microsoft.com/azure/azure-functions/functions-app-settings
# #flex-consumption-plan-deprecations; functionAppConfig replaces most), unsupported there
# (WEBSITE_TIME_ZONE, TZ: flex-consumption-plan#considerations), or key-based.
FORBIDDEN_APP_SETTINGS = {
    "ENABLE_ORYX_BUILD",
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "FUNCTIONS_MAX_HTTP_CONCURRENCY",
    "FUNCTIONS_WORKER_PROCESS_COUNT",
    "FUNCTIONS_WORKER_DYNAMIC_CONCURRENCY_ENABLED",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTOVERVNET",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_DNS_SERVER",
    "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
    "WEBSITE_NODE_DEFAULT_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_SKIP_CONTENTSHARE_VALIDATION",
    "WEBSITE_VNET_ROUTE_ALL",
    "WEBSITE_TIME_ZONE",
    "TZ",
    "APPINSIGHTS_INSTRUMENTATIONKEY",
    "AzureWebJobsStorage",
    STORAGE_CONNECTION,
}
# Site properties the same deprecation list names (siteConfig.* or properties.*): none may be set.
FLEX_DEPRECATED_SITE_PROPERTIES = {
    "alwaysOn", "containerSize", "dnsConfiguration", "ftpsState", "isReserved", "IsXenon", "javaVersion",
    "linuxFxVersion", "LinuxFxVersion", "netFrameworkVersion", "powerShellVersion", "functionAppScaleLimit",
    "preWarmedInstanceCount", "use32BitWorkerProcess", "vnetBackupRestoreEnabled", "vnetContentShareEnabled",
    "vnetImagePullEnabled", "vnetRouteAllEnabled", "windowsFxVersion",
}

# What `environment()` returns in AzureCloud (learn.microsoft.com/azure/azure-resource-manager/bicep/
# bicep-functions-deployment#environment), for defaults built from it.
AZURE_CLOUD_ENVIRONMENT = {"${environment().suffixes.storage}": "core.windows.net"}
# Hosts the no-hardcoded-env-urls linter rule flags by default (learn.microsoft.com/azure/
# azure-resource-manager/bicep/linter-rule-no-hardcoded-environment-urls).
LINTER_DISALLOWED_HOSTS = (
    "gallery.azure.com", "management.core.windows.net", "management.azure.com", "database.windows.net",
    "core.windows.net", "login.microsoftonline.com", "graph.windows.net", "trafficmanager.net",
    "datalake.azure.net", "azuredatalakestore.net", "azuredatalakeanalytics.net", "vault.azure.net",
    "api.loganalytics.io", "asazure.windows.net", "region.asazure.windows.net", "batch.core.windows.net",
)
# Keywords of the secure-secrets-in-params linter rule (linter-rule-secure-secrets-in-parameters).
LINTER_SECRET_KEYWORDS = ("password", "pwd", "secret", "accountkey", "acctkey")


def in_azure_cloud(value: Any) -> Any:
    """A default built from ``environment()``, as AzureCloud evaluates it."""
    if isinstance(value, str):
        for expression, result in AZURE_CLOUD_ENVIRONMENT.items():
            value = value.replace(expression, result)
    return value

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
    "LEDGER_BACKUP_CONTAINER",
    "ENFACT_QUEUE",
    "ENFACT_POISON_QUEUE",
    "BLOB_TRIGGER_POISON_QUEUE",
    "HOST_STORAGE_ACCOUNT_NAME",
    "ARCHIVE_RETENTION_DAYS",
    "KEY_VAULT_NAME",
    "KEY_VAULT_URI",
    "EVENTGRID_SYSTEM_TOPIC_NAME",
    "ALERT_ACTION_GROUP_ID",
    "WORKBOOK_ID",
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


def _flatten_accessors(value: Any) -> Any:
    """pycep-parser >= 0.5 (the version checkov 3.3 pins) returns ``a.b`` / ``a[i]`` / ``environment().x``
    as nested ``property_accessor`` / ``index_accessor`` operators; fold them back into the dotted
    strings (and the ``function.property_name``) of 0.4, which the helpers below were written for.
    On this repository's templates the folded 0.5.1 output equals 0.4.1's exactly (issue 22)."""
    if isinstance(value, list):
        return [_flatten_accessors(item) for item in value]
    if not isinstance(value, dict):
        return value
    value = {key: _flatten_accessors(item) for key, item in value.items()}
    operator = value.get("operator") if len(value) == 1 else None
    if isinstance(operator, dict) and operator.get("type") in ("property_accessor", "index_accessor"):
        first, second = operator["operands"]["operand_1"], operator["operands"]["operand_2"]
        if isinstance(first, str) and isinstance(second, str):
            return f"{first}[{second}]" if operator["type"] == "index_accessor" else f"{first}.{second}"
        if (operator["type"] == "property_accessor" and isinstance(second, str) and isinstance(first, dict)
                and set(first) == {"function"} and isinstance(first["function"], dict)):
            function = dict(first["function"])
            prefix = function.get("property_name")
            function["property_name"] = f"{prefix}.{second}" if prefix else second
            return {"function": function}
    return value


# --------------------------------------------------------------------------------------------
# helpers over pycep's JSON
# --------------------------------------------------------------------------------------------


class Template:
    """One parsed Bicep file with name resolution through its parameters and variables."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rel = path.relative_to(INFRA).as_posix()
        self.text = path.read_text(encoding="utf-8")
        self.json: dict[str, Any] = _flatten_accessors(_PARSER.parse(text=self.text))
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
def hoststorage(templates: dict[str, Template]) -> Template:
    return templates["modules/hoststorage.bicep"]


@pytest.fixture(scope="module")
def alerts(templates: dict[str, Template]) -> Template:
    return templates["modules/alerts.bicep"]


@pytest.fixture(scope="module")
def workbook_module(templates: dict[str, Template]) -> Template:
    return templates["modules/workbook.bicep"]


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
        assert body(module)["scope"] == "rg"  # body(): through `if (…)` (issue 22's optional modules)
    # The subscription stage is deployed by the post-deploy hook, never by main.bicep.
    assert SUBSCRIPTION_STAGE not in paths
    for template in templates.values():
        assert "br:" not in template.text and "br/" not in template.text, f"{template.rel} uses a registry module"


def test_module_parameters_passed_by_main_exist(main: Template, templates: dict[str, Template]) -> None:
    for name, module in main.modules.items():
        target = templates[module["detail"]["path"]]
        passed = set(body(module)["params"])
        assert passed <= set(target.params), f"module {name} passes unknown parameters {passed - set(target.params)}"
        required = {p for p in target.params if not target.has_default(p)}
        assert required <= passed, f"module {name} misses required parameters {required - passed}"


# --------------------------------------------------------------------------------------------
# checkov
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkov_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """checkov's report, run once per test session (the pytest-xdist workers share it)."""
    return json.loads(once(tmp_path_factory, "checkov", lambda: json.dumps(_run_checkov()).encode()))


def _run_checkov() -> dict[str, Any]:
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
    report["stderr"] = proc.stderr
    return report


def test_checkov_parses_every_file(checkov_report: dict[str, Any]) -> None:
    assert checkov_report["summary"]["parsing_errors"] == 0, checkov_report["results"].get("parsing_errors")
    assert checkov_report["summary"]["resource_count"] > 0


#: Checks that checkov itself cannot run on a template, each with why that is checkov's defect and
#: where the property is looked after instead.
CHECKOV_CANNOT_RUN = {
    ("CKV_AZURE_189", "keyvault.bicep"): "3.3.30 calls .lower() on publicNetworkAccess, so any expression crashes it; "
                                         "the value follows networkIsolation (skip with reason in the resource, "
                                         "test_network_isolation_*)",
}


def test_checkov_ran_every_check(checkov_report: dict[str, Any]) -> None:
    """A check that crashes on a template is neither passed, failed nor skipped: it would go unseen."""
    crashed = re.findall(r"Failed to run check (\S+) on \S*/infra/(?:modules/)?([\w.-]+):", checkov_report["stderr"])
    unexplained = [pair for pair in crashed if pair not in CHECKOV_CANNOT_RUN]
    assert not unexplained, f"checkov could not run {unexplained}: make the template checkable, or explain it here"


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


def test_storage_connections_are_identity_based(app_settings: dict[str, Any], functionapp: Template, main: Template) -> None:
    # The host's state lives in its own account, the documents in theirs (roles.bicep explains why).
    for prefix, endpoint, module in (("AzureWebJobsStorage", "host{}Endpoint", "hostStorage"),
                                     (STORAGE_CONNECTION, "{}Endpoint", "storage")):
        for service in ("blob", "queue", "table"):
            param = endpoint.format(service.capitalize() if prefix == "AzureWebJobsStorage" else service)
            assert app_settings[f"{prefix}__{service}ServiceUri"] == param
            assert _main_source_for(main, param) == f"{module}.outputs.{service}Endpoint"
        assert app_settings[f"{prefix}__credential"] == "managedidentity"
        assert app_settings[f"{prefix}__clientId"] == "identityClientId"
    assert app_settings["AZURE_CLIENT_ID"] == "identityClientId"
    assert app_settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=${identityClientId};Authorization=AAD"
    assert app_settings["APPLICATIONINSIGHTS_CONNECTION_STRING"] == "applicationInsightsConnectionString"
    assert app_settings["KEY_VAULT_URL"] == "keyVaultUri"
    assert app_settings["SECRETS_FROM_ENVIRONMENT"] == "false"
    for param in ("blobEndpoint", "queueEndpoint", "tableEndpoint", "hostBlobEndpoint", "hostQueueEndpoint",
                  "hostTableEndpoint", "identityClientId", "keyVaultUri"):
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
                candidates.append(("modules/functionapp.bicep", in_azure_cloud(functionapp.default(value))))
            source = _main_source_for(main, value)
            if isinstance(source, str) and main.has_default(source):
                candidates.append(("main.bicep", in_azure_cloud(main.default(source))))
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
    expected = {env: setting.default for env, setting in SETTING_BY_ENV.items()}
    for env, default in expected.items():
        param = app_settings.get(env)  # a missing one is reported by the test above
        if isinstance(param, str) and functionapp.has_default(param):
            assert in_azure_cloud(functionapp.params[param]["default"]) == default, f"{env}: module default drifted from the code"
            source = _main_source_for(main, param)
            if isinstance(source, str) and source in main.params:
                assert in_azure_cloud(main.default(source)) == default, f"{env}: main.bicep default drifted from the code"


def test_rate_budget_settings_are_app_settings(app_settings: dict[str, Any], main: Template) -> None:
    """Issue 11: the fleet-wide Inqom budget, its poller share and the per-process fallback are
    operator settings (azd env → main.bicep → app setting), so raising the budget is one provision."""
    for env, param in (("INQOM_RATE_LIMIT", "inqomRateLimit"), ("INQOM_POLL_SHARE", "inqomPollShare"),
                       ("INQOM_MAX_REQUESTS_PER_SECOND", "inqomMaxRequestsPerSecond")):
        assert app_settings[env] == param
        assert _main_source_for(main, param) == param
    assert float(main.default("inqomRateLimit")) < 15, "the budget must stay below Inqom's ~15 requests/s"
    assert 0 < float(main.default("inqomPollShare")) < 1


def test_storage_names_match_the_code_defaults(storage: Template, main: Template, app_settings: dict[str, Any]) -> None:
    expected = {
        "INBOX_CONTAINER": ("inboxContainerName", "storage.outputs.inboxContainerName"),
        "ARCHIVE_CONTAINER": ("archiveContainerName", "storage.outputs.archiveContainerName"),
        "QUARANTINE_CONTAINER": ("quarantineContainerName", "storage.outputs.quarantineContainerName"),
        "LEDGER_TABLE": ("ledgerTableName", "storage.outputs.ledgerTableName"),
        "LEDGER_BACKUP_CONTAINER": ("ledgerBackupContainerName", "storage.outputs.ledgerBackupContainerName"),
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


def _locked_down(template: Template) -> dict:
    _, account = template.one(STORAGE_ACCOUNT)
    props = body(account)["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["defaultToOAuthAuthentication"] is True
    assert props["allowCrossTenantReplication"] is False
    _, blob_service = template.one("Microsoft.Storage/storageAccounts/blobServices")
    blob_props = body(blob_service)["properties"]
    for policy in ("deleteRetentionPolicy", "containerDeleteRetentionPolicy"):
        assert blob_props[policy]["enabled"] is True, f"{template.rel}: {policy} (soft delete) must be enabled"
        assert template.resolve(blob_props[policy]["days"]) >= 7
    return blob_props


def test_storage_accounts_are_locked_down(storage: Template, hoststorage: Template) -> None:
    _locked_down(storage)
    _locked_down(hoststorage)


def _containers(template: Template) -> dict[str, dict]:
    """Declared containers by name (loops expanded through their name variable)."""
    found = {}
    for symbol, resource in template.resources_of_type(BLOB_CONTAINER).items():
        loop = loop_of(resource)
        names = ([template.resolve(n) for n in template.vars[loop["detail"]["array_name"]]["value"]] if loop
                 else [template.resolve(body(resource)["name"])])
        for name in names:
            found[name] = {"symbol": symbol, **body(resource)}
    return found


def test_storage_declares_every_container_table_and_queue(storage: Template, hoststorage: Template) -> None:
    containers = _containers(storage)
    assert {
        SETTING_BY_ENV["INBOX_CONTAINER"].default,
        SETTING_BY_ENV["ARCHIVE_CONTAINER"].default,
        SETTING_BY_ENV["QUARANTINE_CONTAINER"].default,
        SETTING_BY_ENV["LEDGER_BACKUP_CONTAINER"].default,
        storage.default("deadLetterContainerName"),
    } == set(containers)
    assert all(c["properties"]["publicAccess"] == "None" for c in containers.values())
    # The deployment package is in the host account, with nothing else of ours.
    assert set(_containers(hoststorage)) == {hoststorage.default("deploymentContainerName")}
    tables = {storage.resolve(body(r)["name"]) for r in storage.resources_of_type(TABLE).values()}
    assert SETTING_BY_ENV["LEDGER_TABLE"].default in tables
    queues = {
        storage.interpolate(storage.resolve(body(r)["name"]))
        for r in storage.resources_of_type(QUEUE).values()
    }
    queue = SETTING_BY_ENV["ENFACT_QUEUE"].default
    # The blob trigger writes poison messages on its connection's account (Functions docs).
    assert {queue, f"{queue}-poison", "webjobs-blobtrigger-poison"} <= queues
    assert "webjobs-blobtrigger-poison" == storage.vars["blobTriggerPoisonQueueName"]["value"]
    devtools = (ROOT / "devtools" / "run.py").read_text(encoding="utf-8")
    assert "webjobs-blobtrigger-poison" in devtools, "the local runner and Azure must agree on the poison queue"


def _evaluate(template: Template, expression: Any, **names: int) -> int:
    """A pycep arithmetic expression over integer literals and the given names."""
    if isinstance(expression, int):
        return expression
    if isinstance(expression, str):
        if expression in names:
            return names[expression]
        return _evaluate(template, template.resolve(expression), **names)
    operator = expression["operator"]
    left, right = (_evaluate(template, v, **names) for v in operator["operands"].values())
    return {"add": left + right, "multiply": left * right, "divide": left // right, "minus": left - right}[operator["type"]]


def test_archive_is_versioned_and_write_once(storage: Template, main: Template) -> None:
    """Item 9: blob versioning on the account, a container-level time-based retention (WORM) policy
    on the archive, created unlocked (ARM only creates unlocked policies), retention in years."""
    blob_props = _locked_down(storage)
    assert blob_props["isVersioningEnabled"] is True
    containers = _containers(storage)
    archive = containers[SETTING_BY_ENV["ARCHIVE_CONTAINER"].default]
    assert archive["symbol"] == "archiveContainer" and not loop_of(storage.resources["archiveContainer"])
    policies = {body(p)["parent"]: p for p in storage.resources_of_type(
        "Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies").values()}
    assert set(policies) == {"archiveContainer", "ledgerBackupContainer"}  # the backup's: tested below
    policy = policies["archiveContainer"]
    assert body(policy)["name"] == "default"
    props = body(policy)["properties"]
    assert props["allowProtectedAppendWrites"] is False and "allowProtectedAppendWritesAll" not in props
    assert "state" not in props  # read-only; locking is an operator step (README)
    days = _evaluate(storage, storage.vars[props["immutabilityPeriodSinceCreationInDays"]]["value"],
                     archiveRetentionYears=storage.default("archiveRetentionYears"))
    assert storage.default("archiveRetentionYears") == main.default("archiveRetentionYears") == 10
    assert days >= 3650 and days == 10 * 365 + 3
    assert _evaluate(storage, storage.vars["archiveRetentionDays"]["value"], archiveRetentionYears=1) >= 365
    assert _evaluate(storage, storage.vars["archiveRetentionDays"]["value"], archiveRetentionYears=100) <= 146000
    # A locked policy accepts no PUT: once locked, the operator sets archiveRetentionLocked and the
    # template stops declaring it.
    condition = policy["config"]["condition"]
    assert condition == {"operator": {"type": "not", "operands": {"bool_value": "archiveRetentionLocked"}}}
    assert storage.default("archiveRetentionLocked") is False
    # Previous versions are expired everywhere but in the archive.
    (_, lifecycle), = storage.resources_of_type("Microsoft.Storage/storageAccounts/managementPolicies").items()
    rules = {r["name"]: r for r in body(lifecycle)["properties"]["policy"]["rules"]}
    assert set(rules) == {"expire-previous-versions", "tier-archive", "expire-ledger-backups"}  # issue 22, tested below
    rule = rules["expire-previous-versions"]
    prefixes = rule["definition"]["filters"]["prefixMatch"]
    assert prefixes["loop_type"]["detail"]["array_name"] == "blobContainerNames" and prefixes["config"] == "${containerName}/"
    assert SETTING_BY_ENV["ARCHIVE_CONTAINER"].default not in {storage.resolve(n) for n in storage.vars["blobContainerNames"]["value"]}
    assert set(rule["definition"]["actions"]) == {"version"}


def test_the_app_never_overwrites_or_deletes_in_the_archive() -> None:
    """The WORM policy refuses overwrites and deletes: the code writes the archive create-only
    (staged blocks, then Put Block List with If-None-Match: *) and never deletes there."""
    archiver = (ROOT / "shared" / "archive" / "poll.py").read_text(encoding="utf-8")
    assert 'commit_block_list(block_ids, metadata=metadata, if_none_match="*")' in archiver
    writes = re.findall(r"archive_blob\.(\w+)\(", archiver)
    assert set(writes) <= {"stage_block", "commit_block_list", "get_blob_properties"}, writes
    for path in [*(ROOT / "shared").rglob("*.py"), *(ROOT / "inqom_bridge_cli").glob("*.py"), *(ROOT / "functions").glob("*.py")]:
        text = path.read_text(encoding="utf-8")
        for line in text.splitlines():
            if "archive_container" in line:
                assert not re.search(r"delete|upload_blob|set_blob_metadata|set_http_headers|set_blob_tags|start_copy", line), \
                    f"{path.name}: {line.strip()}"


def test_diagnostic_settings_send_logs_to_the_workspace(templates: dict[str, Template], main: Template) -> None:
    """Item 8: storage blob/queue/table, the function app, the Event Grid system topic and the vault
    send their resource logs to the one Log Analytics workspace."""
    expected = {
        "modules/storage.bicep": {"blobService": {"StorageWrite", "StorageDelete"},
                                  "queueService": {"StorageWrite", "StorageDelete"},
                                  "tableService": {"StorageWrite", "StorageDelete"}},
        "modules/functionapp.bicep": {"app": {"FunctionAppLogs"}},
        "modules/eventgrid.bicep": {"systemTopic": {"DeliveryFailures"}},
        "modules/keyvault.bicep": {"vault": {"audit"}},
    }
    for rel, scopes in expected.items():
        template = templates[rel]
        found = {}
        for setting in template.resources_of_type("Microsoft.Insights/diagnosticSettings").values():
            config = body(setting)
            assert config["properties"]["workspaceId"] == "logAnalyticsWorkspaceId"
            found[config["scope"]] = {log.get("category") or log.get("categoryGroup") for log in config["properties"]["logs"]}
            assert all(log["enabled"] for log in config["properties"]["logs"])
            assert config["properties"]["metrics"][0]["enabled"] is True
        assert found == scopes, rel
    module_names = {"modules/storage.bicep": "storage", "modules/functionapp.bicep": "functionApp",
                    "modules/eventgrid.bicep": "eventGrid", "modules/keyvault.bicep": "keyVault"}
    for rel, module in module_names.items():
        assert main.modules[module]["config"]["params"]["logAnalyticsWorkspaceId"] == "monitoring.outputs.workspaceId", rel


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
    config = props["functionAppConfig"]
    assert config["runtime"]["name"] == "python"
    assert functionapp.resolve(config["runtime"]["version"]) == "3.11"
    storage_cfg = config["deployment"]["storage"]
    assert storage_cfg["type"] == "blobContainer"
    assert storage_cfg["value"] == "${hostBlobEndpoint}${deploymentContainerName}"
    assert storage_cfg["authentication"] == {"type": "UserAssignedIdentity", "userAssignedIdentityResourceId": "identityId"}


def test_nothing_flex_consumption_deprecates_is_set(functionapp: Template) -> None:
    """Item 1: siteConfig.ftpsState (and the other deprecated site properties) are refused by Flex
    regional deployments. SCM basic publishing stays off; there is no FTP endpoint on Flex, so no
    `ftp` policy either."""
    _, site = functionapp.one("Microsoft.Web/sites")
    props = body(site)["properties"]
    used = set(props) | set(props["siteConfig"])
    assert not used & FLEX_DEPRECATED_SITE_PROPERTIES, used & FLEX_DEPRECATED_SITE_PROPERTIES
    assert "ftpsState:" not in functionapp.text
    basic_auth = functionapp.resources_of_type("Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {body(r)["name"]: body(r)["properties"]["allow"] for r in basic_auth.values()} == {"scm": False}


def test_scale_and_concurrency_are_set_deliberately(functionapp: Template, main: Template) -> None:
    """Issue 11 item 5: the instance cap and the per-instance concurrency are chosen for the shared
    Inqom budget (infra/README.md explains the arithmetic), not left to platform defaults."""
    _, site = functionapp.one("Microsoft.Web/sites")
    scale = body(site)["properties"]["functionAppConfig"]["scaleAndConcurrency"]
    assert scale["maximumInstanceCount"] == "maximumInstanceCount"
    assert scale["instanceMemoryMB"] == "instanceMemoryMB"
    # The only per-trigger setting the schema has (FunctionsScaleAndConcurrencyTriggers.http).
    assert scale["triggers"] == {"http": {"perInstanceConcurrency": "httpPerInstanceConcurrency"}}
    # 40: the lowest maximum every region accepts (issue 22; test_maximum_instance_count_default_deploys).
    assert functionapp.default("maximumInstanceCount") == main.default("maximumInstanceCount") == 40
    assert functionapp.default("httpPerInstanceConcurrency") == 16
    assert _main_source_for(main, "maximumInstanceCount") == "maximumInstanceCount"
    # Blob (Event Grid) and queue concurrency are host.json's: the README's arithmetic uses these.
    host = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))
    assert host["extensions"]["blobs"]["maxDegreeOfParallelism"] >= 1
    assert host["extensions"]["queues"]["batchSize"] >= 1
    readme = (INFRA / "README.md").read_text(encoding="utf-8")
    for term in ("INQOM_RATE_LIMIT", "INQOM_POLL_SHARE", "INQOM_MAX_REQUESTS_PER_SECOND", "maximumInstanceCount",
                 "maxDegreeOfParallelism", "perInstanceConcurrency"):
        assert term in readme, f"infra/README.md does not explain {term}"


def test_role_assignments_are_exactly_the_listed_ones(templates: dict[str, Template], roles: Template) -> None:
    found = []
    for template in templates.values():
        if template is not roles:  # issue 22: the custom roles live beside the assignments
            assert not template.resources_of_type("Microsoft.Authorization/roleDefinitions"), "custom roles belong in roles.bicep"
        for name, assignment in template.resources_of_type("Microsoft.Authorization/roleAssignments").items():
            assert template is roles, f"{template.rel}: role assignment {name} belongs in modules/roles.bicep"
            config = body(assignment)
            dotted = _dotted(config["properties"]["roleDefinitionId"])
            if isinstance(dotted, str) and dotted.removesuffix(".id") in CUSTOM_ROLES:
                role = dotted.removesuffix(".id")
            else:
                function = config["properties"]["roleDefinitionId"]["function"]
                assert function["type"] == "subscription_resource_id"
                assert function["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
                role = template.resolve(function["parameters"]["resource_name_1"])
            scope = config.get("scope")
            assert scope in template.resources, f"{name}: scope must be a resource of the module (not the group)"
            assert template.resources[scope]["existing"] is True
            principal = config["properties"]["principalId"]
            if principal == "operatorPrincipalId":
                assert assignment["config"]["condition"] == "grantOperator", f"{name}: operator roles are opt-in"
                assert config["properties"]["principalType"] == "operatorPrincipalType"
            else:
                assert config["properties"]["principalType"] == "ServicePrincipal"
            found.append((principal, role, scope))
    assert len(found) == len(set(found)), "duplicate role assignment"
    assert set(found) == EXPECTED_ROLE_ASSIGNMENTS, (
        f"unexpected: {set(found) - EXPECTED_ROLE_ASSIGNMENTS}; missing: {EXPECTED_ROLE_ASSIGNMENTS - set(found)}"
    )
    # Each scope is the resource it says, named by the matching parameter.
    for scope, (resource_type, name_param) in ROLE_SCOPES.items():
        resource = roles.resources[scope]
        assert resource["type"] == resource_type and body(resource)["name"] == name_param, scope
    assert roles.vars["grantOperator"]["value"] == {
        "operator": {"type": "not", "operands": {"bool_value": {"function": {"type": "empty", "parameters": {"item_to_test": "operatorPrincipalId"}}}}}
    }
    assert roles.default("operatorPrincipalId") == ""


def test_roles_are_granted_to_the_right_principals(main: Template) -> None:
    params = main.modules["roles"]["config"]["params"]
    assert params["appPrincipalId"] == "identity.outputs.principalId"
    assert params["eventGridPrincipalId"] == "eventGrid.outputs.principalId"
    assert params["hostStorageAccountName"] == "hostStorage.outputs.name"
    for param in ("storageAccountName", "inboxContainerName", "archiveContainerName", "quarantineContainerName",
                  "deadLetterContainerName", "enfactQueueName", "enfactPoisonQueueName", "blobTriggerPoisonQueueName",
                  "ledgerTableName", "ledgerBackupContainerName"):
        wiring = "storage.outputs.name" if param == "storageAccountName" else f"storage.outputs.{param}"
        assert params[param] == wiring, param
    assert params["operatorPrincipalId"] == "operatorPrincipalId" and main.default("operatorPrincipalId") == ""
    # The app starts only once its permissions exist.
    assert "roles" in main.modules["functionApp"]["config"]["dependsOn"]


def test_dead_letter_role_is_scoped_to_the_dead_letter_container(roles: Template, main: Template) -> None:
    container = roles.resources["deadLetterContainer"]
    assert body(container)["name"] == "deadLetterContainerName"
    assert main.modules["roles"]["config"]["params"]["deadLetterContainerName"] == "storage.outputs.deadLetterContainerName"


def _strings_outside_comments(text: str) -> list[str]:
    """Bicep string literals ('…'), with // comments (outside strings) ignored."""
    literals: list[str] = []
    for line in text.splitlines():
        current: list[str] | None = None
        index = 0
        while index < len(line):
            char = line[index]
            if current is None:
                if line.startswith("//", index):
                    break
                if char == "'":
                    current = []
            elif char == "\\" and index + 1 < len(line):
                current.append(line[index + 1])
                index += 1
            elif char == "'":
                literals.append("".join(current))
                current = None
            else:
                current.append(char)
            index += 1
    return literals


def test_no_linter_warnings_the_compiler_would_print(templates: dict[str, Template]) -> None:
    """Item 3, mirroring two Bicep linter rules offline: no-hardcoded-env-urls (no literal cloud host
    in a string) and secure-secrets-in-params (no non-secure parameter named like a secret)."""
    for template in templates.values():
        for literal in _strings_outside_comments(template.text):
            for host in LINTER_DISALLOWED_HOSTS:
                assert host not in literal.lower(), f"{template.rel}: '{literal}' hard-codes {host}"
        for name in template.params:
            if not template.is_secure(name):
                assert not any(k in name.lower() for k in LINTER_SECRET_KEYWORDS), f"{template.rel}: {name}"


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
# alerts and workbook: every query names what the app (or the platform, documented) emits
# --------------------------------------------------------------------------------------------

# Columns of the tables the queries read, from Microsoft's schemas:
# * Application Insights classic tables (the component scope): the "Table schemas" mapping in
#   learn.microsoft.com/azure/azure-monitor/app/convert-classic-resource (customMetrics, requests, traces);
# * StorageQueueLogs (workspace scope): learn.microsoft.com/azure/storage/queues/monitor-queue-storage-reference
#   (Fields that describe the operation / the service).
APP_INSIGHTS_COLUMNS = {
    "customMetrics": {"timestamp", "name", "value", "valueCount", "valueSum", "valueMin", "valueMax", "valueStdDev",
                      "customDimensions", "operation_Name", "operation_Id", "cloud_RoleName", "cloud_RoleInstance",
                      "itemType", "sdkVersion"},
    "requests": {"timestamp", "name", "success", "resultCode", "duration", "id", "url", "source", "itemCount",
                 "customDimensions", "operation_Name", "operation_Id", "cloud_RoleName", "cloud_RoleInstance"},
    "traces": {"timestamp", "message", "severityLevel", "itemCount", "customDimensions", "operation_Name",
               "operation_Id", "cloud_RoleName", "cloud_RoleInstance"},
}
WORKSPACE_COLUMNS = {
    "StorageQueueLogs": {"TimeGenerated", "AccountName", "Category", "OperationName", "StatusCode", "StatusText",
                         "Uri", "CallerIpAddress", "DurationMs", "ServerLatencyMs", "ObjectKey"},
}
# Storage Analytics logged operation names (learn.microsoft.com/rest/api/storageservices/
# storage-analytics-logged-operations-and-status-messages): enqueueing a message is PutMessage.
STORAGE_QUEUE_OPERATIONS = {"PutMessage"}
# Microsoft.EventGrid/systemTopics platform metrics (learn.microsoft.com/azure/azure-monitor/reference/
# supported-metrics/microsoft-eventgrid-systemtopics-metrics).
EVENT_GRID_SYSTEM_TOPIC_METRICS = {
    "AdvancedFilterEvaluationCount", "DeadLetteredCount", "DeliveryAttemptFailCount", "DeliverySuccessCount",
    "DestinationProcessingDurationInMs", "DroppedEventCount", "MatchedEventCount", "PublishFailCount",
    "PublishSuccessCount", "PublishSuccessLatencyInMs", "ServerDeliverySuccessRate", "UnmatchedEventCount",
}
KQL_WORDS = {
    "where", "extend", "summarize", "project", "by", "order", "top", "asc", "desc", "and", "or", "not", "in",
    "startswith", "endswith", "has", "contains", "parse", "with", "bin", "sum", "count", "max", "min", "avg",
    "dcount", "any", "percentile", "minif", "maxif", "countif", "tostring", "tobool", "toint", "todouble", "split",
    "parse_url", "iff", "isnotempty", "isnotnull", "isempty", "isnull", "ago", "true", "false", "h", "m", "d", "s",
}
# Log lines the workbook reads from traces: prefix → (file, the logging call that writes it).
TRACE_LINES = {
    "archived ledger ": ("shared/archive/poll.py", 'log.info("archived ledger %s (Inqom %s) to %s"'),
    # The first %s is entry.state.lower(): "quarantined" for a quarantined document.
    "quarantined ": ("shared/ledger/quarantine.py", 'log.warning("%s %s (ledger %s): %s", entry.state.lower()'),
}
REQUIRED_ALERTS = {  # item 6 of issue 12, plus the silent poller
    "documentQuarantined", "oldestPending", "deadLettered", "poisonMessages", "inqomRefusals", "functionFailures",
    "pollSilent",
}


def _function_names() -> set[str]:
    names = set()
    for path in (ROOT / "functions").glob("*.py"):
        names |= set(re.findall(r'function_name\("([^"]+)"\)', path.read_text(encoding="utf-8")))
    return names


class QueryCheck:
    """Parse one KQL query just enough to list what it names, and check each name against its source."""

    def __init__(self, query: str, columns: dict[str, set[str]]) -> None:
        self.query = query
        self.literals = re.findall(r'"([^"]*)"', query)
        stripped = re.sub(r'"[^"]*"', '""', query)
        self.table = stripped.split("|")[0].strip()
        assert self.table in columns, f"unknown table {self.table!r} in: {query}"
        self.columns = columns[self.table]
        self.dimensions = set(re.findall(r"customDimensions\.(\w+)", stripped))
        stripped = re.sub(r"customDimensions\.\w+", "customDimensions", stripped)
        self.properties = set(re.findall(r"\)\.(\w+)", stripped))
        stripped = re.sub(r"\)\.\w+", ")", stripped)
        stripped = re.sub(r"\b\d+(\.\d+)?[dhms]?\b", " ", stripped)
        self.declared = set(re.findall(r"\b(\w+)\s*=(?!=)", stripped))
        for match in re.finditer(r"\bparse\s+\w+\s+with\s+([^|]*)", stripped):
            self.declared |= set(re.findall(r"[A-Za-z_]\w*", match.group(1))) - {"with"}
        self.identifiers = set(re.findall(r"[A-Za-z_]\w*", stripped)) - {self.table}
        self.by = set()
        for match in re.finditer(r"\bby\s+([^|]*)", stripped):
            self.by |= {part.strip() for part in match.group(1).split(",") if re.fullmatch(r"\s*\w+\s*", part)}

    def unknown_identifiers(self) -> set[str]:
        return self.identifiers - KQL_WORDS - self.columns - self.declared

    def compared(self, column: str) -> list[str]:
        return re.findall(rf'\b{column}\s*==\s*"([^"]*)"', self.query)


def _check_app_query(query: str, *, where: str) -> QueryCheck:
    check = QueryCheck(query, APP_INSIGHTS_COLUMNS)
    assert not check.unknown_identifiers(), f"{where}: names no known column or KQL word: {check.unknown_identifiers()}"
    assert check.properties <= set(), f"{where}: unexpected property access {check.properties}"
    if check.table == "customMetrics":
        named = set(check.compared("name")) | set(re.findall(r'"(inqom_bridge\.[\w.]+)"', query))
        assert named and named <= set(metrics.METRIC_NAMES), f"{where}: metrics the app does not emit: {named}"
        keys = set().union(*(metrics.ATTRIBUTES[n] for n in named))
        assert check.dimensions <= keys, f"{where}: attributes {check.dimensions - keys} are not on {named}"
        outcomes = re.findall(r'customDimensions\.outcome\)\s*==\s*"([^"]*)"', query)
        assert set(outcomes) <= metrics.OUTCOMES, f"{where}: outcomes the app never records: {outcomes}"
        for status in check.compared("status"):
            assert status.isdigit() or status == metrics.NO_ANSWER, f"{where}: status {status!r}"
    elif check.table == "traces":
        assert check.dimensions <= set(LOG_CONTEXT_FIELDS), f"{where}: {check.dimensions - set(LOG_CONTEXT_FIELDS)}"
        prefixes = re.findall(r'message\s+startswith\s+"([^"]*)"', query)
        assert prefixes, f"{where}: a traces query must select the app's own lines"
        for prefix in prefixes:
            path, call = TRACE_LINES[prefix]
            assert call in (ROOT / path).read_text(encoding="utf-8"), f"{where}: {path} no longer logs {call}"
        for match in re.finditer(r'parse\s+message\s+with\s+([^|]*)', query):
            pieces = re.findall(r'"([^"]*)"', match.group(1))
            (path, call), = {TRACE_LINES[p] for p in prefixes}
            logged = call.split('"')[1].replace("%s", "")
            for piece in pieces[1:]:
                assert piece in logged, f"{where}: {piece!r} is not in the logged line {call}"
    elif check.table == "requests":
        for function in check.compared("operation_Name"):
            assert function in _function_names(), f"{where}: no function named {function!r} in functions/"
    return check


def _scheduled_rules(alerts: Template) -> dict[str, dict]:
    return {name: body(rule) for name, rule in alerts.resources_of_type("Microsoft.Insights/scheduledQueryRules").items()}


def test_alerts_cover_what_an_operator_must_know(alerts: Template, main: Template) -> None:
    rules = set(_scheduled_rules(alerts)) | set(alerts.resources_of_type("Microsoft.Insights/metricAlerts"))
    assert rules == REQUIRED_ALERTS
    (ag_name, action_group), = alerts.resources_of_type("Microsoft.Insights/actionGroups").items()
    receivers = body(action_group)["properties"]["emailReceivers"]["operator"]["operands"]
    assert receivers["false_value"][0]["emailAddress"] == "alertEmail"
    assert len(body(action_group)["properties"]["groupShortName"]) <= 12
    params = main.modules["alerts"]["config"]["params"]
    assert params["alertEmail"] == "alertEmail" and main.default("alertEmail") == ""
    assert params["applicationInsightsId"] == "monitoring.outputs.applicationInsightsId"
    assert params["logAnalyticsWorkspaceId"] == "monitoring.outputs.workspaceId"
    assert params["eventGridSystemTopicId"] == "eventGrid.outputs.id"
    for name, rule in _scheduled_rules(alerts).items():
        assert rule["kind"] == "LogAlert", name
        assert rule["properties"]["actions"]["actionGroups"] == [f"{ag_name}.id"], name
    for name, rule in alerts.resources_of_type("Microsoft.Insights/metricAlerts").items():
        assert body(rule)["properties"]["actions"] == [{"actionGroupId": f"{ag_name}.id"}], name


def test_every_alert_query_names_what_the_app_emits(alerts: Template) -> None:
    for name, rule in _scheduled_rules(alerts).items():
        (scope,) = rule["properties"]["scopes"]
        for criterion in rule["properties"]["criteria"]["allOf"]:
            query = criterion["query"]
            if scope == "applicationInsightsId":
                check = _check_app_query(query, where=name)
            else:
                assert scope == "logAnalyticsWorkspaceId", name
                check = QueryCheck(query, WORKSPACE_COLUMNS)
                assert not check.unknown_identifiers(), f"{name}: {check.unknown_identifiers()}"
                assert check.properties <= {"Path"}, name  # parse_url(...).Path
                assert set(check.compared("OperationName")) <= STORAGE_QUEUE_OPERATIONS, name
            measure = criterion["metricMeasureColumn"]
            assert measure in check.declared, f"{name}: {measure} is not a column the query makes"
            for dimension in criterion.get("dimensions", []):
                assert dimension["name"] in check.by, f"{name}: dimension {dimension['name']} is not a summarize key"
            failing = criterion["failingPeriods"]
            assert failing["minFailingPeriodsToAlert"] <= failing["numberOfEvaluationPeriods"], name
            if failing["numberOfEvaluationPeriods"] > 1:
                assert re.search(r"bin\(timestamp,\s*5m\)", query) and rule["properties"]["windowSize"] == "PT5M", name


def test_poison_alert_matches_the_declared_poison_queues(alerts: Template, storage: Template) -> None:
    query = _scheduled_rules(alerts)["poisonMessages"]["properties"]["criteria"]["allOf"][0]["query"]
    assert 'endswith "-poison"' in query
    queues = {storage.interpolate(storage.resolve(body(r)["name"])) for r in storage.resources_of_type(QUEUE).values()}
    assert {q for q in queues if q.endswith("-poison")} == {f"{SETTING_BY_ENV['ENFACT_QUEUE'].default}-poison",
                                                            "webjobs-blobtrigger-poison"}


def test_dead_letter_alert_uses_a_documented_system_topic_metric(alerts: Template) -> None:
    (_, rule), = alerts.resources_of_type("Microsoft.Insights/metricAlerts").items()
    props = body(rule)["properties"]
    assert props["scopes"] == ["eventGridSystemTopicId"]
    # pycep keeps the quotes of a quoted property name ('odata.type').
    odata_type = props["criteria"].get("odata.type", props["criteria"].get("'odata.type'"))
    assert odata_type == "Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria"
    for criterion in props["criteria"]["allOf"]:
        assert criterion["metricNamespace"] == "Microsoft.EventGrid/systemTopics"
        assert criterion["metricName"] in EVENT_GRID_SYSTEM_TOPIC_METRICS
        assert criterion["metricName"] == "DeadLetteredCount"


def _workbook() -> dict:
    return json.loads((INFRA / "modules" / "workbook.json").read_text(encoding="utf-8"))


def test_workbook_is_linked_to_application_insights(workbook_module: Template, main: Template) -> None:
    (_, resource), = workbook_module.resources_of_type("Microsoft.Insights/workbooks").items()
    props = body(resource)["properties"]
    assert props["sourceId"] == "applicationInsightsId" and props["category"] == "workbook"
    replace = props["serializedData"]["function"]
    assert replace["type"] == "replace"
    assert replace["parameters"]["original_string"]["function"]["parameters"]["file_path"] == "workbook.json"
    assert replace["parameters"]["old_string"] == "__APPINSIGHTS_ID__"
    assert main.modules["workbook"]["config"]["params"]["applicationInsightsId"] == "monitoring.outputs.applicationInsightsId"
    data = _workbook()
    assert data["version"] == "Notebook/1.0" and data["fallbackResourceIds"] == ["__APPINSIGHTS_ID__"]


def test_workbook_answers_the_morning_questions_with_what_the_app_emits() -> None:
    items = {item["name"]: item["content"] for item in _workbook()["items"] if item["type"] == 3}
    assert {"documents-per-day", "pending", "drop-to-archive", "inqom-calls", "quarantine-reasons"} <= set(items)
    for name, content in items.items():
        assert content["version"] == "KqlItem/1.0" and content["queryType"] == 0, name
        assert content["resourceType"] == "microsoft.insights/components", name
        assert content["crossComponentResources"] == ["__APPINSIGHTS_ID__"], name
        _check_app_query(content["query"], where=f"workbook {name}")
    assert "percentile(hours, 50)" in items["drop-to-archive"]["query"]
    assert "percentile(hours, 95)" in items["drop-to-archive"]["query"]
    assert metrics.DOCUMENTS in items["documents-per-day"]["query"] and "by bin(timestamp, 1d), outcome" in items["documents-per-day"]["query"]
    assert {metrics.PENDING_DOCUMENTS, metrics.OLDEST_PENDING_AGE_SECONDS} <= set(re.findall(r'"([\w.]+)"', items["pending"]["query"]))
    assert metrics.INQOM_CALLS in items["inqom-calls"]["query"] and "status" in items["inqom-calls"]["query"]


def test_the_drift_check_catches_a_renamed_metric_or_field() -> None:
    """The checker itself: a query on a name the app does not emit fails."""
    for broken in ('customMetrics | where name == "inqom_bridge.document" | summarize n = sum(valueSum)',
                   'customMetrics | where name == "inqom_bridge.documents" | where tostring(customDimensions.reason) == "x" | summarize n = sum(valueSum)',
                   'customMetrics | where name == "inqom_bridge.documents" | where tostring(customDimensions.outcome) == "lost" | summarize n = sum(valueSum)',
                   'customMetrics | where name == "inqom_bridge.documents" | summarize n = sum(valueTotal)',
                   'requests | where operation_Name == "poll_document" | summarize n = count()',
                   'traces | where message startswith "archiving " | summarize n = count()'):
        with pytest.raises((AssertionError, KeyError)):
            _check_app_query(broken, where="broken")


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
            # azd substitutes text; it converts to the parameter's type (int, bool) as the Azure-Samples
            # templates rely on ("vnetEnabled": "${VNET_ENABLED}" for a bool parameter).
            expected = main.default(name)
            expected = str(expected).lower() if isinstance(expected, bool) else str(in_azure_cloud(expected))
            assert default == expected, f"{name}: parameters-file default drifted from main.bicep"
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


# A fake `az`: FAKE_LOGIN=expired, FAKE_KEYS=forbidden|missing-app|transient, FAKE_DEPLOY=forbidden make it
# answer as the real CLI does (error text on stderr, exit 1).
FAKE_AZ = """#!/bin/sh
printf '%s\\n' "$*" >> "$FAKE_LOG"
case "$1 $2" in
  "account get-access-token")
    if [ "${FAKE_LOGIN:-}" = "expired" ]; then
      echo "ERROR: AADSTS700082: The refresh token has expired due to inactivity." >&2
      echo "Please run 'az login' to setup account." >&2
      exit 1
    fi
    echo "2031-01-01 00:00:00.000000" ;;
  "functionapp keys")
    case "${FAKE_KEYS:-}" in
      forbidden)
        echo "(AuthorizationFailed) The client 'op@example.com' with object id '00000000-0000-0000-0000-000000000000' does not have authorization to perform action 'Microsoft.Web/sites/host/listkeys/action' over scope '/subscriptions/x/resourceGroups/rg-test/providers/Microsoft.Web/sites/func-test' or the scope is invalid." >&2
        exit 1 ;;
      missing-app)
        echo "(ResourceNotFound) The Resource 'Microsoft.Web/sites/func-test' under resource group 'rg-test' was not found." >&2
        exit 1 ;;
      transient)
        echo "(BadGateway) Encountered an error (BadGateway) from host runtime." >&2
        exit 1 ;;
    esac
    n=$(cat "$FAKE_STATE" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "$FAKE_STATE"
    if [ "$n" -ge 3 ]; then echo true; else echo false; fi ;;
  "deployment group")
    if [ "${FAKE_DEPLOY:-}" = "forbidden" ]; then
      echo "ERROR: (AuthorizationFailed) The client 'op@example.com' with object id '00000000-0000-0000-0000-000000000000' does not have authorization to perform action 'Microsoft.EventGrid/systemTopics/eventSubscriptions/write' over scope '/subscriptions/x/resourceGroups/rg-test/providers/Microsoft.EventGrid/systemTopics/evgt-test/eventSubscriptions/inbox-blob-created' or the scope is invalid." >&2
      exit 1
    fi
    exit 0 ;;
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


def test_posix_hook_fails_fast_on_an_expired_login(tmp_path: Path) -> None:
    """Item 2: an expired `az login` is reported at once, in Azure's words, before any waiting."""
    proc = _run_hook(tmp_path, FAKE_LOGIN="expired")
    assert proc.returncode != 0
    assert "login missing or expired" in proc.stderr and "AADSTS700082" in proc.stderr and "az login" in proc.stderr
    calls = (tmp_path / "az.log").read_text().splitlines()
    assert calls == ["account get-access-token --query expiresOn --output tsv"], "no key polling, no deployment"


def test_posix_hook_names_the_roles_when_reading_keys_is_refused(tmp_path: Path) -> None:
    proc = _run_hook(tmp_path, FAKE_KEYS="forbidden", EVENTGRID_KEY_WAIT_ATTEMPTS="30")
    assert proc.returncode != 0
    assert "AuthorizationFailed" in proc.stderr and "Microsoft.Web/sites/host/listkeys/action" in proc.stderr
    assert "Contributor on resource group 'rg-test'" in proc.stderr
    assert "Website Contributor plus EventGrid Contributor" in proc.stderr
    calls = (tmp_path / "az.log").read_text().splitlines()
    assert sum(c.startswith("functionapp keys list") for c in calls) == 1, "a refusal is final: no retries"
    assert not any(c.startswith("deployment") for c in calls)


def test_posix_hook_names_the_roles_when_the_subscription_is_refused(tmp_path: Path) -> None:
    """Website Contributor reads the keys but holds no Microsoft.EventGrid action."""
    proc = _run_hook(tmp_path, FAKE_DEPLOY="forbidden")
    assert proc.returncode != 0
    assert "Microsoft.EventGrid/systemTopics/eventSubscriptions/write" in proc.stderr
    assert "Website Contributor alone has no Microsoft.EventGrid action" in proc.stderr
    assert "EventGrid Contributor" in proc.stderr


def test_posix_hook_reports_a_missing_app_at_once(tmp_path: Path) -> None:
    proc = _run_hook(tmp_path, FAKE_KEYS="missing-app", EVENTGRID_KEY_WAIT_ATTEMPTS="30")
    assert proc.returncode != 0
    assert "ResourceNotFound" in proc.stderr and "azd provision" in proc.stderr
    assert sum(c.startswith("functionapp keys list") for c in (tmp_path / "az.log").read_text().splitlines()) == 1


def test_posix_hook_waits_out_a_transient_error_and_reports_it(tmp_path: Path) -> None:
    proc = _run_hook(tmp_path, FAKE_KEYS="transient", EVENTGRID_KEY_WAIT_ATTEMPTS="3")
    assert proc.returncode != 0
    assert "no blobs_extension key after 3 attempts; last error: (BadGateway)" in proc.stderr
    assert sum(c.startswith("functionapp keys list") for c in (tmp_path / "az.log").read_text().splitlines()) == 3


@pytest.mark.parametrize("script", [POSTDEPLOY_SH, POSTDEPLOY_PS1], ids=lambda p: p.name)
def test_hook_scripts_check_the_login_and_state_the_real_roles(script: Path) -> None:
    text = script.read_text(encoding="utf-8")
    assert "get-access-token --query expiresOn" in text  # never prints the token
    assert "AuthorizationFailed" in text
    assert "Website Contributor plus EventGrid Contributor" in text
    assert "or Website Contributor) on the resource group" not in text  # the old, wrong claim
    keys_call = text[text.index("functionapp keys list"):]
    keys_call = keys_call[:keys_call.index("\n\n")] if "\n\n" in keys_call else keys_call
    assert "2>/dev/null" not in keys_call and "2>$null" not in keys_call, "errors are read, not hidden"


def test_posix_hook_gives_up_when_the_key_never_appears(tmp_path: Path) -> None:
    proc = _run_hook(tmp_path, EVENTGRID_KEY_WAIT_ATTEMPTS="2")
    assert proc.returncode != 0
    assert "no blobs_extension key after 2 attempts" in proc.stderr
    assert not any(c.startswith("deployment") for c in (tmp_path / "az.log").read_text().splitlines())


# --------------------------------------------------------------------------------------------
# issue 22: identity and isolation
# --------------------------------------------------------------------------------------------

ROLE_DEFINITION = "Microsoft.Authorization/roleDefinitions"
ROLE_ASSIGNMENT = "Microsoft.Authorization/roleAssignments"
BLOB_ACTIONS = "Microsoft.Storage/storageAccounts/blobServices"


def _dotted(value: Any) -> Any:
    """``a.b.c`` whether pycep gives it as text or as nested property_accessor operators."""
    if isinstance(value, dict) and value.get("operator", {}).get("type") == "property_accessor":
        operands = value["operator"]["operands"]
        return f"{_dotted(operands['operand_1'])}.{_dotted(operands['operand_2'])}"
    return value


def test_archive_writer_role_is_contributor_like_without_policy_or_container_management(roles: Template) -> None:
    """Item 1: Contributor's blob data actions the code needs plus tags/read and tags/write; no
    control-plane action (so no container write/delete, no immutabilityPolicies/*), no blob delete."""
    definitions = roles.resources_of_type(ROLE_DEFINITION)
    assert set(definitions) == set(CUSTOM_ROLES)
    assert "config" not in definitions[ARCHIVE_WRITER_ROLE] or not definitions[ARCHIVE_WRITER_ROLE]["config"].get("condition")
    props = body(definitions[ARCHIVE_WRITER_ROLE])["properties"]
    assert props["type"] == "CustomRole"
    (permission,) = props["permissions"]
    data_actions = set(roles.resolve(permission["dataActions"]))
    assert permission["actions"] == [] and permission["notActions"] == [] and permission["notDataActions"] == []
    assert {
        f"{BLOB_ACTIONS}/containers/blobs/read",
        f"{BLOB_ACTIONS}/containers/blobs/write",
        f"{BLOB_ACTIONS}/containers/blobs/add/action",
        f"{BLOB_ACTIONS}/containers/blobs/tags/read",
        f"{BLOB_ACTIONS}/containers/blobs/tags/write",
    } == data_actions
    every_action = " ".join(data_actions | set(permission["actions"]))
    for forbidden in ("immutabilityPolicies", "containers/delete", "containers/write", "containers/*", "blobs/*",
                      "blobs/delete", "blobs/move", "deleteBlobVersion", "immutableStorage", "runAsSuperUser"):
        assert forbidden not in every_action, forbidden
    # Assignable at the resource group only; its name unique per tenant (role names are).
    (scope,) = props["assignableScopes"]
    assert scope["function"]["type"] == "resource_group" and scope["function"]["property_name"] == "id"
    assert "${uniqueString(resourceGroup().id)}" in props["roleName"]


def test_operator_archive_role_reads_finds_and_tags_and_nothing_more(roles: Template) -> None:
    """Review of issue 22: `find` needs tags/read and filter/action, `backfill-tags` tags/write; the
    built-in role that has them all is Owner, whose containers/* deletes immutability policies."""
    definition = roles.resources_of_type(ROLE_DEFINITION)[ARCHIVE_OPERATOR_ROLE]
    assert definition["config"]["condition"] == "grantOperator"
    (permission,) = body(definition)["properties"]["permissions"]
    assert permission["actions"] == [] and permission["notActions"] == [] and permission["notDataActions"] == []
    assert set(roles.resolve(permission["dataActions"])) == {
        f"{BLOB_ACTIONS}/containers/blobs/read",
        f"{BLOB_ACTIONS}/containers/blobs/tags/read",
        f"{BLOB_ACTIONS}/containers/blobs/tags/write",
        f"{BLOB_ACTIONS}/containers/blobs/filter/action",
    }
    (scope,) = body(definition)["properties"]["assignableScopes"]
    assert scope["function"]["type"] == "resource_group"
    readme = (INFRA / "README.md").read_text(encoding="utf-8")
    assert "archive operator" in readme and "grant Storage Blob Data Owner" not in readme


def test_app_archive_assignment_uses_the_custom_role_not_owner(roles: Template) -> None:
    archive = {
        name: body(a) for name, a in roles.resources_of_type(ROLE_ASSIGNMENT).items()
        if body(a)["scope"] == "archiveContainer" and body(a)["properties"]["principalId"] == "appPrincipalId"
    }
    assert list(archive) == ["appArchive"]
    assert _dotted(archive["appArchive"]["properties"]["roleDefinitionId"]) == f"{ARCHIVE_WRITER_ROLE}.id"
    # Owner (immutabilityPolicies/delete among containers/*) stays only on the inbox and the host account.
    owner_scopes = set()
    for assignment in roles.resources_of_type(ROLE_ASSIGNMENT).values():
        role_id = body(assignment)["properties"]["roleDefinitionId"]
        if isinstance(role_id, dict) and "function" in role_id:
            if roles.resolve(role_id["function"]["parameters"]["resource_name_1"]) == STORAGE_BLOB_DATA_OWNER:
                owner_scopes.add(body(assignment)["scope"])
    assert owner_scopes == {"inboxContainer", "hostStorage"}
    readme = (INFRA / "README.md").read_text(encoding="utf-8")
    assert "archive writer" in readme and "tags/write" in readme


@pytest.mark.parametrize(("environment_name", "expected"), [
    ("prod", "prod"), ("Production", "prod"), ("dev", "dev"), ("staging", "dev"), ("prod-eu", "dev"),
])
def test_environment_type_defaults_from_the_azd_environment_name(main: Template, environment_name: str, expected: str) -> None:
    assert _eval(main, "effectiveEnvironmentType", environmentName=environment_name) == expected
    assert main.default("environmentType") == ""
    assert set(_allowed(main, "environmentType")) == {"", "dev", "test", "prod"}
    assert main.outputs["ENVIRONMENT_TYPE"]["value"] == "effectiveEnvironmentType"


@pytest.mark.parametrize("environment_type", ["dev", "test", "prod"])
def test_environment_type_set_explicitly_wins_over_the_name(main: Template, environment_type: str) -> None:
    """ENVIRONMENT_TYPE reaches the template (main.parameters.json) as the preprovision hook reads it:
    an environment named "contoso-live" set to prod is prod for the endpoints and both locks."""
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert parameters["environmentType"]["value"] == "${ENVIRONMENT_TYPE=}"
    names = {"environmentType": environment_type, "environmentName": "contoso-live"}
    assert _eval(main, "effectiveEnvironmentType", **names) == environment_type
    for derived in ("isProduction", "archiveLockRequired", "documentsAccountLocked"):
        assert _eval(main, derived, **names) is (environment_type == "prod"), derived


def _allowed(template: Template, param: str) -> list:
    for decorator in template.params[param]["decorators"]:
        if decorator["type"] == "allowed":
            return decorator["argument"]
    return []


@pytest.mark.parametrize(("environment_type", "locked"), [("prod", True), ("dev", False), ("test", False)])
def test_archive_lock_and_delete_lock_default_per_environment(main: Template, environment_type: str, locked: bool) -> None:
    """Item 1: prod locks the retention policy (scripted) and puts a CanNotDelete lock on the documents
    account; dev/test keep both off (an unlocked policy can still be removed there: said in the README)."""
    assert _eval(main, "archiveLockRequired", environmentType=environment_type, environmentName="x") is locked
    assert _eval(main, "documentsAccountLocked", environmentType=environment_type, environmentName="x") is locked
    assert main.outputs["ARCHIVE_RETENTION_LOCK_REQUIRED"]["value"] == "archiveLockRequired"
    assert main.outputs["DOCUMENTS_ACCOUNT_DELETE_LOCK"]["value"] == "documentsAccountLocked"


@pytest.mark.parametrize(("variable", "param", "derived"), [
    ("LOCK_ARCHIVE_RETENTION", "lockArchiveRetention", "archiveLockRequired"),
    ("PROTECT_DOCUMENTS_ACCOUNT", "protectDocumentsAccount", "documentsAccountLocked"),
])
def test_each_lock_default_can_be_overridden_through_azd(main: Template, variable: str, param: str, derived: str) -> None:
    """An unset variable keeps the environment's default; "true"/"false" wins in any environment."""
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert parameters[param]["value"] == "${%s=}" % variable
    assert main.default(param) == "" and set(_allowed(main, param)) == {"", "true", "false"}
    for environment_type in ("prod", "dev"):
        assert _eval(main, derived, environmentType=environment_type, environmentName="x", **{param: ""}) is \
            (environment_type == "prod")
        assert _eval(main, derived, environmentType=environment_type, environmentName="x", **{param: "true"}) is True
        assert _eval(main, derived, environmentType=environment_type, environmentName="x", **{param: "false"}) is False


def test_resource_lock_on_the_documents_account_in_production_only(main: Template, templates: dict[str, Template]) -> None:
    module = main.modules["protection"]
    assert module["detail"]["path"] == "modules/protection.bicep"
    assert module["config"]["condition"] == "documentsAccountLocked"
    assert _dotted(body(module)["params"]["storageAccountName"]) == "storage.outputs.name"
    protection = templates["modules/protection.bicep"]
    (_, lock), = protection.resources_of_type("Microsoft.Authorization/locks").items()
    assert body(lock)["scope"] == "storage" and body(lock)["properties"]["level"] == "CanNotDelete"
    assert protection.resources["storage"]["type"] == STORAGE_ACCOUNT and protection.resources["storage"]["existing"]
    assert _eval(main, "documentsAccountLocked", environmentType="", environmentName="prod") is True
    assert _eval(main, "documentsAccountLocked", environmentType="", environmentName="dev") is False


def test_locking_the_policy_is_a_scripted_postprovision_step(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))
    hook = config["hooks"]["postprovision"]
    assert hook["posix"]["run"] == "./scripts/lock-archive-retention.sh"
    assert hook["windows"]["run"] == "./scripts/lock-archive-retention.ps1"
    script = ROOT / "scripts" / "lock-archive-retention.sh"
    assert os.access(script, os.X_OK)
    for path in (script, ROOT / "scripts" / "lock-archive-retention.ps1"):
        text = path.read_text(encoding="utf-8")
        assert "az storage container immutability-policy lock" in text and "--if-match" in text
        assert "azd env set ARCHIVE_RETENTION_LOCKED true" in text
    # Run it with a fake az/azd: dev does nothing, prod locks an unlocked policy then records it.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    (bin_dir / "az").write_text(
        "#!/bin/sh\necho \"az $*\" >> \"$CALLS\"\n"
        "case \"$*\" in *'--query state'*) echo \"$FAKE_STATE\";; *'--query etag'*) echo '\"0x8D\"';; esac\n")
    (bin_dir / "azd").write_text("#!/bin/sh\necho \"azd $*\" >> \"$CALLS\"\n")
    for tool in ("az", "azd"):
        (bin_dir / tool).chmod(0o755)
    base = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(log), "AZURE_RESOURCE_GROUP": "rg-x",
            "STORAGE_ACCOUNT_NAME": "stx", "ARCHIVE_CONTAINER": "archive"}
    dev = subprocess.run(["sh", str(script)], env={**base, "ARCHIVE_RETENTION_LOCK_REQUIRED": "false"},
                         capture_output=True, text=True, timeout=30)
    assert dev.returncode == 0 and not log.exists() and "stays unlocked" in dev.stdout
    prod = subprocess.run(["sh", str(script)], env={**base, "ARCHIVE_RETENTION_LOCK_REQUIRED": "true", "FAKE_STATE": "Unlocked"},
                          capture_output=True, text=True, timeout=30)
    assert prod.returncode == 0, prod.stderr
    calls = log.read_text(encoding="utf-8")
    assert "immutability-policy lock --resource-group rg-x --account-name stx --container-name archive --if-match" in calls
    assert calls.strip().endswith("azd env set ARCHIVE_RETENTION_LOCKED true")


def test_ledger_table_role_is_scoped_to_the_ledger_table(roles: Template) -> None:
    """Item 4: Table Data Contributor on the ledger table only (it also holds the budget rows)."""
    for name, assignment in roles.resources_of_type(ROLE_ASSIGNMENT).items():
        config = body(assignment)
        assert config["scope"] != "storage", f"{name}: nothing at documents-account scope"
    assert body(roles.resources["appTables"])["scope"] == "ledgerTable"
    budget = (ROOT / "shared" / "inqom" / "budget_row.py").read_text(encoding="utf-8")
    assert "in the ledger table" in budget


def test_queue_roles_are_the_narrowest_that_suffice(roles: Template) -> None:
    """Item 4: the enFact queue gets Sender (enqueue) + Reader and Message Processor (the queue
    trigger, per Microsoft's Queue Storage binding page); the poison queues only Sender (the host and
    the blob trigger write them). No Queue Data Contributor on the documents account."""
    found: dict[str, set[str]] = {}
    for assignment in roles.resources_of_type(ROLE_ASSIGNMENT).values():
        config = body(assignment)
        if config["properties"]["principalId"] != "appPrincipalId":
            continue
        role_id = config["properties"]["roleDefinitionId"]
        if isinstance(role_id, dict) and "function" in role_id:
            found.setdefault(config["scope"], set()).add(roles.resolve(role_id["function"]["parameters"]["resource_name_1"]))
    assert found["enfactQueue"] == {STORAGE_QUEUE_DATA_MESSAGE_SENDER, STORAGE_QUEUE_DATA_READER, STORAGE_QUEUE_DATA_MESSAGE_PROCESSOR}
    assert found["enfactPoisonQueue"] == {STORAGE_QUEUE_DATA_MESSAGE_SENDER}
    assert found["blobTriggerPoisonQueue"] == {STORAGE_QUEUE_DATA_MESSAGE_SENDER}
    # The host account keeps Queue Data Contributor (host-created queues, blob trigger control queue).
    assert STORAGE_QUEUE_DATA_CONTRIBUTOR in found["hostStorage"]
    assert all(STORAGE_QUEUE_DATA_CONTRIBUTOR not in roles_ for scope, roles_ in found.items() if scope != "hostStorage")


def test_network_isolation_option_declares_vnet_endpoints_and_zones(main: Template, templates: dict[str, Template]) -> None:
    """Item 5: VNet + Flex integration subnet (delegated to Microsoft.App/environments) + private
    endpoints for both storage accounts (blob, queue, table) and Key Vault, with private DNS zones."""
    assert main.default("networkIsolation") is False
    module = main.modules["network"]
    assert module["detail"]["path"] == "modules/network.bicep" and module["config"]["condition"] == "networkIsolation"
    params = body(module)["params"]
    assert _dotted(params["storageAccountId"]) == "storage.outputs.id"
    assert _dotted(params["hostStorageAccountId"]) == "hostStorage.outputs.id"
    assert _dotted(params["keyVaultId"]) == "keyVault.outputs.id"
    network = templates["modules/network.bicep"]
    (_, vnet), = network.resources_of_type("Microsoft.Network/virtualNetworks").items()
    subnets = {s["name"]: s["properties"] for s in body(vnet)["properties"]["subnets"]}
    assert set(subnets) == {"app", "private-endpoints"}
    assert [d["properties"]["serviceName"] for d in subnets["app"]["delegations"]] == ["Microsoft.App/environments"]
    assert subnets["private-endpoints"]["privateEndpointNetworkPolicies"] == "Disabled"
    endpoints = network.vars["storageEndpoints"]["value"]
    pairs = {(e["accountId"], e["group"]) for e in endpoints}
    assert pairs == {(account, group) for account in ("storageAccountId", "hostStorageAccountId") for group in ("blob", "queue", "table")}
    storage_groups = network.vars["storageGroups"]["value"]
    assert all(storage_groups[e["zone"]] == e["group"] for e in endpoints)
    pe = network.resources_of_type("Microsoft.Network/privateEndpoints")
    assert set(pe) == {"storagePrivateEndpoints", "vaultPrivateEndpoint"}
    assert loop_of(pe["storagePrivateEndpoints"])["detail"]["array_name"] == "storageEndpoints"
    (vault_connection,) = body(pe["vaultPrivateEndpoint"])["properties"]["privateLinkServiceConnections"]
    assert vault_connection["properties"]["privateLinkServiceId"] == "keyVaultId"
    assert vault_connection["properties"]["groupIds"] == ["vault"]
    zones = network.resources_of_type("Microsoft.Network/privateDnsZones")
    assert body(zones["storageZones"])["name"] == "privatelink.${group}.${storageSuffix}"
    assert body(zones["vaultZone"])["name"] == "privatelink.vaultcore.azure.net"
    links = network.resources_of_type("Microsoft.Network/privateDnsZones/virtualNetworkLinks")
    assert len(links) == 2 and all(_dotted(body(l)["properties"]["virtualNetwork"]["id"]) == "vnet.id" for l in links.values())
    groups = network.resources_of_type("Microsoft.Network/privateEndpoints/privateDnsZoneGroups")
    assert set(groups) == {"storageDnsGroups", "vaultDnsGroup"}
    assert loop_of(groups["storageDnsGroups"])["detail"]["array_name"] == "storageEndpoints"
    (vault_zone_config,) = body(groups["vaultDnsGroup"])["properties"]["privateDnsZoneConfigs"]
    assert body(groups["vaultDnsGroup"])["parent"] == "vaultPrivateEndpoint"
    assert _dotted(vault_zone_config["properties"]["privateDnsZoneId"]) == "vaultZone.id"
    assert _dotted(network.outputs["appSubnetId"]["value"]) == "appSubnet.id"


@pytest.mark.parametrize("isolated", [True, False])
def test_network_isolation_closes_public_access_only_when_on(main: Template, templates: dict[str, Template], isolated: bool) -> None:
    """On: host account and Key Vault publicNetworkAccess Disabled, documents account firewall Deny
    (trusted services only: Event Grid dead-letters there), app VNet-integrated. Off: today's public
    endpoints. The app's inbound stays public either way (Event Grid webhook, enFact push)."""
    for module in ("storage", "hostStorage", "keyVault"):
        assert body(main.modules[module])["params"]["networkIsolation"] == "networkIsolation", module
    expected_access = "Disabled" if isolated else "Enabled"
    expected_action = "Deny" if isolated else "Allow"
    for rel, resource_type in (("modules/hoststorage.bicep", STORAGE_ACCOUNT), ("modules/keyvault.bicep", "Microsoft.KeyVault/vaults")):
        template = templates[rel]
        _, resource = template.one(resource_type)
        props = body(resource)["properties"]
        assert _eval(template, props["publicNetworkAccess"], networkIsolation=isolated) == expected_access, rel
        assert _eval(template, props["networkAcls"]["defaultAction"], networkIsolation=isolated) == expected_action, rel
        assert template.default("networkIsolation") is False
    documents = templates["modules/storage.bicep"]
    _, account = documents.one(STORAGE_ACCOUNT)
    props = body(account)["properties"]
    assert _eval(documents, props["networkAcls"]["defaultAction"], networkIsolation=isolated) == expected_action
    assert props["networkAcls"]["bypass"] == "AzureServices"
    functionapp = templates["modules/functionapp.bicep"]
    _, site = functionapp.one("Microsoft.Web/sites")
    site_props = body(site)["properties"]
    assert site_props["publicNetworkAccess"] == "Enabled"
    subnet = _eval(main, body(main.modules["functionApp"])["params"]["virtualNetworkSubnetId"], networkIsolation=isolated)
    assert subnet == ("network.outputs.appSubnetId" if isolated else "")
    assert _eval(functionapp, site_props["virtualNetworkSubnetId"], virtualNetworkSubnetId=subnet) == (subnet or None)
    assert "network" in body(main.modules["functionApp"])["dependsOn"]


# --------------------------------------------------------------------------------------------
# issue 22: checkov, scale, environments, retention
# --------------------------------------------------------------------------------------------

PREPROVISION_SH = ROOT / "scripts" / "azd-preprovision.sh"
PREPROVISION_PS1 = ROOT / "scripts" / "azd-preprovision.ps1"
INQOM_PROD_HOSTS = ("auth.inqom.com", "wa-fred-accounting-documents-prod.azurewebsites.net")
ENFACT_PROD_HOST = "api5.onfact.be"


def _eval(template: Template, expression: Any, **names: Any) -> Any:
    """Evaluate a pycep expression with ``names`` bound and everything else resolved through the
    template's parameter defaults and variables: literals, "${name}" interpolation, conditionals,
    !, ==, >, empty(), contains(), toLower(), unary minus, property accessors (dotted)."""
    if isinstance(expression, str):
        if expression in names:
            return names[expression]
        if expression in template.params:
            return _eval(template, template.default(expression), **names)
        if expression in template.vars:
            return _eval(template, template.vars[expression]["value"], **names)
        return re.sub(r"\$\{(\w+)\}", lambda m: str(_eval(template, m.group(1), **names)), expression)
    if isinstance(expression, list):
        return [_eval(template, item, **names) for item in expression]
    if not isinstance(expression, dict):
        return expression
    if set(expression) == {"function"}:
        function = expression["function"]
        args = {k: _eval(template, v, **names) for k, v in function.get("parameters", {}).items()}
        if function["type"] == "to_lower":
            return args["string_to_change"].lower()
        if function["type"] == "contains":
            return args["item_to_find"] in args["container"]
        assert function["type"] == "empty", f"unsupported function {function['type']}"
        return not args["item_to_test"]
    if set(expression) != {"operator"}:
        return {k: _eval(template, v, **names) for k, v in expression.items()}
    kind, operands = expression["operator"]["type"], expression["operator"]["operands"]
    if kind == "property_accessor":
        return _dotted(expression)
    if kind == "conditional":
        chosen = "true_value" if _eval(template, operands["condition"], **names) else "false_value"
        return _eval(template, operands[chosen], **names)
    if kind == "not":
        return not _eval(template, operands["bool_value"], **names)
    if kind == "minus" and set(operands) == {"integer_value"}:
        return -operands["integer_value"]
    left, right = (_eval(template, operands[k], **names) for k in ("operand_1", "operand_2"))
    return {"equals": lambda: left == right, "greater_than": lambda: left > right}[kind]()


def _function_app_setting_source(main: Template, module_param: str) -> Any:
    return body(main.modules["functionApp"])["params"][module_param]


@pytest.mark.parametrize("environment_type", ["dev", "test"])
def test_no_production_endpoint_in_a_non_production_environment(main: Template, environment_type: str) -> None:
    """Issue 22 item 6: with nothing set, a non-prod environment gets Inqom's staging endpoints and
    no enFact endpoint at all (the preprovision hook then refuses to provision); prod gets production."""
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    for name, variable in (("inqomTokenUrl", "INQOM_TOKEN_URL"), ("inqomApiBaseUrl", "INQOM_API_BASE_URL"),
                           ("enfactApiBaseUrl", "ENFACT_API_BASE_URL"), ("archiveAllowedHosts", "ARCHIVE_ALLOWED_HOSTS")):
        assert main.default(name) == "", f"{name}: a literal default would apply in every environment"
        assert parameters[name]["value"] == "${%s=}" % variable
    values = {
        module_param: _eval(main, _function_app_setting_source(main, module_param), environmentType=environment_type)
        for module_param in ("inqomTokenUrl", "inqomApiBaseUrl", "enfactApiBaseUrl", "archiveAllowedHosts")
    }
    for value in values.values():
        assert not any(host in value for host in (*INQOM_PROD_HOSTS, ENFACT_PROD_HOST)) or "staging" in value, values
    assert values["inqomTokenUrl"] == "https://staging-auth.inqom.com/identity/connect/token"
    assert values["inqomApiBaseUrl"] == "https://wa-fred-accounting-documents-staging.azurewebsites.net"
    assert values["enfactApiBaseUrl"] == "" and values["archiveAllowedHosts"] == ""
    # An explicit value wins everywhere; prod defaults are the code's own defaults.
    assert _eval(main, _function_app_setting_source(main, "inqomTokenUrl"), environmentType=environment_type,
                    inqomTokenUrl="https://x.example/token") == "https://x.example/token"
    prod = {p: in_azure_cloud(_eval(main, _function_app_setting_source(main, p), environmentType="prod"))
            for p in ("inqomTokenUrl", "inqomApiBaseUrl", "enfactApiBaseUrl", "archiveAllowedHosts")}
    assert prod == {"inqomTokenUrl": SETTING_BY_ENV["INQOM_TOKEN_URL"].default,
                    "inqomApiBaseUrl": SETTING_BY_ENV["INQOM_API_BASE_URL"].default,
                    "enfactApiBaseUrl": SETTING_BY_ENV["ENFACT_API_BASE_URL"].default,
                    "archiveAllowedHosts": SETTING_BY_ENV["ARCHIVE_ALLOWED_HOSTS"].default}
    assert _eval(main, "effectiveEnvironmentType", environmentType="", environmentName="staging") == "dev"


def test_inqom_staging_auth_host_is_a_documented_parameter(main: Template) -> None:
    """Issue 22 item 6: the seed spec writes staging-auth.inqom.com, Inqom's other documents
    auth-staging.inqom.com; both are allowed values and infra/README.md names both."""
    allowed = next(d["argument"] for d in main.params["inqomStagingAuthHost"]["decorators"] if d["type"] == "allowed")
    assert set(allowed) == {"staging-auth.inqom.com", "auth-staging.inqom.com"}
    assert main.default("inqomStagingAuthHost") == "staging-auth.inqom.com"
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert parameters["inqomStagingAuthHost"]["value"] == "${INQOM_STAGING_AUTH_HOST=staging-auth.inqom.com}"
    assert _eval(main, _function_app_setting_source(main, "inqomTokenUrl"), environmentType="dev",
                    inqomStagingAuthHost="auth-staging.inqom.com") == "https://auth-staging.inqom.com/identity/connect/token"
    readme = (INFRA / "README.md").read_text(encoding="utf-8")
    assert "staging-auth.inqom.com" in readme and "auth-staging.inqom.com" in readme and "INQOM_STAGING_AUTH_HOST" in readme


def test_azure_yaml_runs_the_preprovision_checks() -> None:
    config = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))
    hook = config["hooks"]["preprovision"]
    assert hook["posix"] == {"shell": "sh", "run": "./scripts/azd-preprovision.sh", "continueOnError": False}
    assert hook["windows"] == {"shell": "pwsh", "run": "./scripts/azd-preprovision.ps1", "continueOnError": False}
    assert os.access(PREPROVISION_SH, os.X_OK) and PREPROVISION_PS1.is_file()
    for script in (PREPROVISION_SH, PREPROVISION_PS1):
        text = script.read_text(encoding="utf-8")
        for name in ("ENFACT_API_BASE_URL", "ARCHIVE_ALLOWED_HOSTS", "INQOM_TOKEN_URL", "INQOM_API_BASE_URL", "ALERT_EMAIL", "ENVIRONMENT_TYPE",
                     "ALLOW_PRODUCTION_ENDPOINTS", "LOCK_ARCHIVE_RETENTION", "PROTECT_DOCUMENTS_ACCOUNT"):
            assert name in text, f"{script.name} does not check {name}"


def _preprovision(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    return subprocess.run(["sh", str(PREPROVISION_SH)], capture_output=True, text=True, env=clean, timeout=30)


@pytest.mark.parametrize(
    ("env", "ok", "expected"),
    [
        ({"AZURE_ENV_NAME": "dev", "ENFACT_API_BASE_URL": "https://enfact.test", "ARCHIVE_ALLOWED_HOSTS": "files.test", "ALERT_EMAIL": "ops@x.example"}, True, ""),
        ({"AZURE_ENV_NAME": "dev", "ALERT_EMAIL": "ops@x.example", "ARCHIVE_ALLOWED_HOSTS": "files.test"}, False,
         "ENFACT_API_BASE_URL is required"),
        ({"AZURE_ENV_NAME": "test", "ENFACT_API_BASE_URL": "https://enfact.test", "ALERT_EMAIL": "ops@x.example"}, False,
         "ARCHIVE_ALLOWED_HOSTS is required"),
        ({"AZURE_ENV_NAME": "dev", "ENFACT_API_BASE_URL": "https://enfact.test", "ARCHIVE_ALLOWED_HOSTS": "files.test", "ALERT_EMAIL": "ops@x.example",
          "INQOM_TOKEN_URL": "https://auth.inqom.com/identity/connect/token"}, False, "production identity server"),
        ({"AZURE_ENV_NAME": "dev", "ENFACT_API_BASE_URL": "https://enfact.test", "ARCHIVE_ALLOWED_HOSTS": "files.test", "ALERT_EMAIL": "ops@x.example",
          "INQOM_TOKEN_URL": "https://staging-auth.inqom.com/identity/connect/token"}, True, ""),
        ({"AZURE_ENV_NAME": "dev", "ENFACT_API_BASE_URL": "https://enfact.test", "ARCHIVE_ALLOWED_HOSTS": "files.test", "ALERT_EMAIL": "ops@x.example",
          "INQOM_API_BASE_URL": "https://wa-fred-accounting-documents-prod.azurewebsites.net",
          "ALLOW_PRODUCTION_ENDPOINTS": "true"}, True, ""),
        ({"AZURE_ENV_NAME": "dev", "ENFACT_API_BASE_URL": "https://enfact.test", "ARCHIVE_ALLOWED_HOSTS": "files.test"}, True, "NOTIFY NOBODY"),
        ({"AZURE_ENV_NAME": "Production"}, False, "ALERT_EMAIL is empty"),
        ({"AZURE_ENV_NAME": "prod", "ALERT_EMAIL": "ops@x.example"}, True, ""),
        ({"AZURE_ENV_NAME": "x", "ENVIRONMENT_TYPE": "prod", "ALERT_EMAIL": "ops@x.example"}, True, ""),
        ({"AZURE_ENV_NAME": "prod", "ALERT_EMAIL": "ops@x.example", "LOCK_ARCHIVE_RETENTION": "false"}, True,
         "LOCK_ARCHIVE_RETENTION=false in prod"),
        ({"AZURE_ENV_NAME": "prod", "ALERT_EMAIL": "ops@x.example", "PROTECT_DOCUMENTS_ACCOUNT": "yes"}, False,
         "PROTECT_DOCUMENTS_ACCOUNT is 'yes'"),
    ],
)
def test_preprovision_hook_refuses_production_defaults_and_silent_alerts(env: dict[str, str], ok: bool, expected: str) -> None:
    """Issue 22 item 6: outside prod, no enFact URL or a production Inqom URL stops `azd provision`;
    an empty ALERT_EMAIL stops prod and is a loud warning elsewhere."""
    if not shutil.which("sh"):
        pytest.skip("sh not available")
    proc = _preprovision(**env)
    assert (proc.returncode == 0) is ok, proc.stderr
    assert expected in proc.stderr


def test_preprovision_refuses_an_environment_type_the_template_does_not_allow() -> None:
    proc = _preprovision(AZURE_ENV_NAME="x", ENVIRONMENT_TYPE="PROD", ALERT_EMAIL="ops@x.example")
    assert proc.returncode == 1 and "use dev, test or prod" in proc.stderr


@pytest.mark.parametrize(("state", "recorded"), [("Locked", True), ("Unlocked", False)])
def test_preprovision_learns_from_azure_that_the_retention_policy_is_locked(tmp_path: Path, state: str,
                                                                          recorded: bool) -> None:
    """Review of issue 22: a provision from a machine that did not lock the policy (a pipeline, a
    re-created environment) must not PUT the locked policy again."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "az").write_text("#!/bin/sh\necho \"az $*\" >> \"$CALLS\"\necho \"$FAKE_STATE\"\n")
    (bin_dir / "azd").write_text("#!/bin/sh\necho \"azd $*\" >> \"$CALLS\"\n")
    for tool in ("az", "azd"):
        (bin_dir / tool).chmod(0o755)
    env = {"AZURE_ENV_NAME": "prod", "ALERT_EMAIL": "ops@x.example", "AZURE_RESOURCE_GROUP": "rg-x",
           "STORAGE_ACCOUNT_NAME": "stx", "ARCHIVE_CONTAINER": "archive", "CALLS": str(calls), "FAKE_STATE": state,
           "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    proc = subprocess.run(["sh", str(PREPROVISION_SH)], capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 0, proc.stderr
    log = calls.read_text()
    assert "az storage container immutability-policy show --resource-group rg-x --account-name stx " \
           "--container-name archive --query state -o tsv" in log
    assert ("azd env set ARCHIVE_RETENTION_LOCKED true" in log) is recorded
    # Already recorded: Azure is not asked again.
    calls.unlink()
    proc = subprocess.run(["sh", str(PREPROVISION_SH)], capture_output=True, text=True, timeout=30,
                          env={**env, "ARCHIVE_RETENTION_LOCKED": "true"})
    assert proc.returncode == 0 and not calls.exists()


def test_alert_email_empty_is_never_silent(main: Template) -> None:
    description = next(d["argument"] for d in main.params["alertEmail"]["decorators"] if d["type"] == "description")
    assert "preprovision" in description and main.default("alertEmail") == ""


def test_maximum_instance_count_default_deploys(main: Template, functionapp: Template) -> None:
    """Issue 22 item 2: 40 is the lowest maximum every region accepts; it applies per function scale
    group, and infra/README.md sizes the Inqom budget note for it."""
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert main.default("maximumInstanceCount") == functionapp.default("maximumInstanceCount") == 40
    assert parameters["maximumInstanceCount"]["value"] == "${MAXIMUM_INSTANCE_COUNT=40}"
    readme = (INFRA / "README.md").read_text(encoding="utf-8")
    assert "`maximumInstanceCount` = **40**" in readme and "per function scale group" in readme


def test_documents_account_is_geo_redundant_by_default(main: Template, storage: Template, hoststorage: Template) -> None:
    """Issue 22 item 3: a ten-year archive on ZRS stays in one region; GZRS by default, RA-GZRS offered."""
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert main.default("storageSkuName") == storage.default("skuName") == "Standard_GZRS"
    assert parameters["storageSkuName"]["value"] == "${STORAGE_SKU_NAME=Standard_GZRS}"
    allowed = next(d["argument"] for d in main.params["storageSkuName"]["decorators"] if d["type"] == "allowed")
    assert {"Standard_GZRS", "Standard_RAGZRS"} <= set(allowed)
    assert body(main.modules["storage"])["params"]["skuName"] == "storageSkuName"
    _, account = storage.one(STORAGE_ACCOUNT)
    assert body(account)["sku"]["name"] == "skuName"
    # The host account stays ZRS, with its reason in the resource (checkov CKV_AZURE_206).
    assert hoststorage.default("hostSkuName") == "Standard_ZRS"
    assert "checkov:skip=CKV_AZURE_206" in hoststorage.text


def test_log_analytics_daily_cap_and_audit_retention_parameters(main: Template, templates: dict[str, Template]) -> None:
    """Issue 22 item 7: workspaceCapping.dailyQuotaGb from a parameter (0 = no cap, sent as -1), and the
    audit tables kept ten years (interactive retention + long-term)."""
    monitoring = templates["modules/monitoring.bicep"]
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    params = body(main.modules["monitoring"])["params"]
    assert params["dailyQuotaGb"] == "logAnalyticsDailyCapGb" and main.default("logAnalyticsDailyCapGb") == 0
    assert parameters["logAnalyticsDailyCapGb"]["value"] == "${LOG_ANALYTICS_DAILY_CAP_GB=0}"
    _, workspace = monitoring.one("Microsoft.OperationalInsights/workspaces")
    quota = body(workspace)["properties"]["workspaceCapping"]["dailyQuotaGb"]
    assert _eval(monitoring, quota) == -1 and _eval(monitoring, quota, dailyQuotaGb=5) == 5
    assert params["auditTotalRetentionInDays"] == "auditLogRetentionDays" and main.default("auditLogRetentionDays") >= 3650
    assert parameters["auditLogRetentionDays"]["value"] == "${AUDIT_LOG_RETENTION_DAYS=3653}"
    (_, tables), = monitoring.resources_of_type("Microsoft.OperationalInsights/workspaces/tables").items()
    assert loop_of(tables)["detail"]["array_name"] == "auditTables"
    assert set(monitoring.vars["auditTables"]["value"]) == {"StorageBlobLogs", "StorageQueueLogs", "StorageTableLogs", "FunctionAppLogs",
                                                              "AzureDiagnostics"}
    props = body(tables)["properties"]
    assert props == {"retentionInDays": "retentionInDays", "totalRetentionInDays": "auditTotalRetentionInDays"}


@pytest.mark.parametrize(("tier", "action"), [("Cold", "tierToCold"), ("Cool", "tierToCool")])
def test_archive_tiers_to_cool_or_cold_after_n_days(main: Template, storage: Template, tier: str, action: str) -> None:
    """Issue 22 item 7: a lifecycle rule moves archived documents (and only them) to Cool or Cold
    after archiveTierAfterDays; disabled at 0; never deletes (the WORM policy forbids it anyway)."""
    (_, lifecycle), = storage.resources_of_type("Microsoft.Storage/storageAccounts/managementPolicies").items()
    rules = {r["name"]: r for r in body(lifecycle)["properties"]["policy"]["rules"]}
    rule = rules["tier-archive"]
    assert rule["definition"]["filters"] == {"blobTypes": ["blockBlob"], "prefixMatch": ["${archiveContainerName}/"]}
    assert _eval(storage, rule["enabled"]) is True and _eval(storage, rule["enabled"], archiveTierAfterDays=0) is False
    actions = _eval(storage, rule["definition"]["actions"], archiveTier=tier, archiveTierAfterDays=90)
    assert actions == {"baseBlob": {action: {"daysAfterCreationGreaterThan": 90}}}
    assert storage.default("archiveTier") == main.default("archiveTier") == "Cold"
    assert storage.default("archiveTierAfterDays") == main.default("archiveTierAfterDays") == 90
    allowed = next(d["argument"] for d in storage.params["archiveTier"]["decorators"] if d["type"] == "allowed")
    assert set(allowed) == {"Cool", "Cold"}  # online tiers only: Archive would need rehydration
    module = body(main.modules["storage"])["params"]
    assert module["archiveTier"] == "archiveTier" and module["archiveTierAfterDays"] == "archiveTierAfterDays"


def test_checkov_is_the_pinned_current_release(checkov_report: dict[str, Any]) -> None:
    """Issue 22 item 3: the pinned checkov is the 3.3 line, and that is what ran."""
    pins = dict(
        line.split("#")[0].strip().split("==")
        for line in (ROOT / "requirements-dev.txt").read_text(encoding="utf-8").splitlines()
        if "==" in line.split("#")[0]
    )
    assert pins["checkov"].startswith("3.3.")
    assert checkov_report["summary"]["checkov_version"] == pins["checkov"]
    assert checkov_report["summary"]["failed"] == 0


def test_ledger_backup_script_is_documented() -> None:
    script = ROOT / "scripts" / "backup-ledger.py"
    text = script.read_text(encoding="utf-8")
    assert "def export" in text and "def restore" in text and "--from-blob" in text
    assert "from shared.ledger.backup import" in text  # one serialization, the app's
    compile(text, str(script), "exec")
    readme = (INFRA / "README.md").read_text(encoding="utf-8")
    assert "scripts/backup-ledger.py" in readme


def test_ledger_backup_container_is_retained_expired_and_written_create_only(main: Template, storage: Template,
                                                                              roles: Template) -> None:
    """Issue 22 item 7: the daily ledger export's container keeps each backup immutable (unlocked
    time-based retention) for ledgerBackupRetentionDays, the lifecycle deletes it the day after, and
    the app writes there with the archive writer role (create-only, no delete), the operator reads."""
    policy = next(p for p in storage.resources_of_type(
        "Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies").values()
        if body(p)["parent"] == "ledgerBackupContainer")
    assert body(policy)["name"] == "default" and "condition" not in policy["config"]
    assert body(policy)["properties"] == {"immutabilityPeriodSinceCreationInDays": "ledgerBackupRetentionDays",
                                          "allowProtectedAppendWrites": False}
    assert storage.default("ledgerBackupRetentionDays") == main.default("ledgerBackupRetentionDays") == 35
    assert body(main.modules["storage"])["params"]["ledgerBackupRetentionDays"] == "ledgerBackupRetentionDays"
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert parameters["ledgerBackupRetentionDays"]["value"] == "${LEDGER_BACKUP_RETENTION_DAYS=35}"

    (_, lifecycle), = storage.resources_of_type("Microsoft.Storage/storageAccounts/managementPolicies").items()
    rule = {r["name"]: r for r in body(lifecycle)["properties"]["policy"]["rules"]}["expire-ledger-backups"]
    assert rule["enabled"] is True
    assert rule["definition"]["filters"] == {"blobTypes": ["blockBlob"], "prefixMatch": ["${ledgerBackupContainerName}/"]}
    actions = rule["definition"]["actions"]
    assert set(actions) == {"baseBlob", "version"}  # a deleted backup leaves a version (versioning): it goes too
    for action in actions.values():
        assert set(action) == {"delete"} and set(action["delete"]) == {"daysAfterCreationGreaterThan"}
        assert _evaluate(storage, action["delete"]["daysAfterCreationGreaterThan"], ledgerBackupRetentionDays=35) == 36
    assert storage.default("ledgerBackupContainerName") == SETTING_BY_ENV["LEDGER_BACKUP_CONTAINER"].default

    backup = {name: body(a) for name, a in roles.resources_of_type(ROLE_ASSIGNMENT).items()
              if body(a)["scope"] == "ledgerBackupContainer"}
    assert set(backup) == {"appLedgerBackup", "operatorLedgerBackup"}
    assert backup["appLedgerBackup"]["properties"]["principalId"] == "appPrincipalId"
    assert _dotted(backup["appLedgerBackup"]["properties"]["roleDefinitionId"]) == f"{ARCHIVE_WRITER_ROLE}.id"
    assert main.outputs["LEDGER_BACKUP_CONTAINER"]["value"] == "storage.outputs.ledgerBackupContainerName"
