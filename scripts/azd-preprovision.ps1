# azd preprovision hook (azure.yaml, Windows, issue 22): same checks as scripts/azd-preprovision.sh.
# Outside prod: ENFACT_API_BASE_URL and ARCHIVE_ALLOWED_HOSTS are required, and a production Inqom endpoint is refused unless
# ALLOW_PRODUCTION_ENDPOINTS=true. Everywhere: an empty ALERT_EMAIL stops prod and warns elsewhere.
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$failed = $false
function Report-Error([string] $message) {
    [Console]::Error.WriteLine("azd-preprovision: ERROR: $message")
    $script:failed = $true
}

$envName = "$env:AZURE_ENV_NAME"
$envType = "$env:ENVIRONMENT_TYPE"
if (-not $envType) {
    $envType = if (@('prod', 'production') -contains $envName.ToLowerInvariant()) { 'prod' } else { 'dev' }
}
if (@('dev', 'test', 'prod') -cnotcontains $envType) {
    [Console]::Error.WriteLine("azd-preprovision: ERROR: ENVIRONMENT_TYPE is '$envType': use dev, test or prod (lower case, as main.bicep allows)")
    exit 1
}

# A locked retention policy refuses the template's PUT: learn it from Azure, not from one machine's .env.
if ("$env:ARCHIVE_RETENTION_LOCKED" -ne 'true' -and "$env:STORAGE_ACCOUNT_NAME" -and "$env:AZURE_RESOURCE_GROUP" -and
        (Get-Command az -ErrorAction SilentlyContinue)) {
    $container = if ("$env:ARCHIVE_CONTAINER") { "$env:ARCHIVE_CONTAINER" } else { 'archive' }
    $state = az storage container immutability-policy show --resource-group "$env:AZURE_RESOURCE_GROUP" `
        --account-name "$env:STORAGE_ACCOUNT_NAME" --container-name $container --query state -o tsv 2>$null
    if ($state -eq 'Locked') {
        Write-Host "azd-preprovision: the archive retention policy is locked in Azure: ARCHIVE_RETENTION_LOCKED=true"
        azd env set ARCHIVE_RETENTION_LOCKED true
        if ($LASTEXITCODE -ne 0) { Report-Error "could not record ARCHIVE_RETENTION_LOCKED=true (azd env set)" }
    }
}

if ($envType -cne 'prod') {
    if (-not "$env:ENFACT_API_BASE_URL") {
        Report-Error "environment '$envName' is '$envType', not prod: ENFACT_API_BASE_URL is required (no enFact staging endpoint is known, and the production API is the default in prod only). Set it: azd env set ENFACT_API_BASE_URL <your enFact test endpoint>"
    }
    if (-not "$env:ARCHIVE_ALLOWED_HOSTS") {
        Report-Error "environment '$envName' is '$envType', not prod: ARCHIVE_ALLOWED_HOSTS is required (the host of Inqom's staging download URLs is not documented; production's is the default in prod only). Set it: azd env set ARCHIVE_ALLOWED_HOSTS <host of the public-url answers>"
    }
    if ("$env:ALLOW_PRODUCTION_ENDPOINTS" -ne 'true') {
        if ("$env:INQOM_TOKEN_URL".StartsWith('https://auth.inqom.com/')) {
            Report-Error "INQOM_TOKEN_URL is Inqom's production identity server in a '$envType' environment. Unset it (azd env set INQOM_TOKEN_URL '') for staging, or set ALLOW_PRODUCTION_ENDPOINTS=true deliberately."
        }
        if ("$env:INQOM_API_BASE_URL" -like '*wa-fred-accounting-documents-prod.*') {
            Report-Error "INQOM_API_BASE_URL is Inqom's production API in a '$envType' environment. Unset it (azd env set INQOM_API_BASE_URL '') for staging, or set ALLOW_PRODUCTION_ENDPOINTS=true deliberately."
        }
    }
}

foreach ($lock in 'LOCK_ARCHIVE_RETENTION', 'PROTECT_DOCUMENTS_ACCOUNT') {
    $value = [Environment]::GetEnvironmentVariable($lock)
    if ("$value" -ceq 'false') {
        if ($envType -ceq 'prod') {
            Write-Warning "azd-preprovision: $lock=false in prod: the books lose a protection an IT reviewer will ask for (infra/README.md, the archive)."
        }
    }
    elseif ("$value" -and "$value" -cne 'true') {
        Report-Error "$lock is '$value': use true, false, or unset it for the environment's default"
    }
}

if (-not "$env:ALERT_EMAIL") {
    if ($envType -ceq 'prod') {
        Report-Error "ALERT_EMAIL is empty: the alerts (stalled documents, poison messages, dead-lettered events) would e-mail nobody. Set it: azd env set ALERT_EMAIL ops@cabinet.example"
    } else {
        [Console]::Error.WriteLine('################################################################################')
        [Console]::Error.WriteLine('# azd-preprovision: WARNING: ALERT_EMAIL is empty.')
        [Console]::Error.WriteLine("# The alerts of environment '$envName' will fire and NOTIFY NOBODY.")
        [Console]::Error.WriteLine('# Set it: azd env set ALERT_EMAIL ops@cabinet.example')
        [Console]::Error.WriteLine('################################################################################')
    }
}

if ($failed) { exit 1 }
exit 0
