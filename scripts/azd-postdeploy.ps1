# azd postdeploy hook (azure.yaml, Windows): same steps as scripts/azd-postdeploy.sh.
# Creates or updates the Event Grid subscription (infra/eventgrid-subscription.bicep) that
# delivers BlobCreated events of the inbox to the `upload_document` blob trigger, once the
# host has created its blobs_extension system key. The key itself is read by ARM (listKeys in
# the template): this script never sees, prints or passes it.
#
# Needs: the Azure CLI signed in (a valid, unexpired `az login`) as a principal holding, on the
# resource group, either Contributor, or Website Contributor plus EventGrid Contributor
# (Microsoft.EventGrid/*: EventGrid EventSubscription Contributor does not cover
# systemTopics/eventSubscriptions/write). Website Contributor alone is refused with
# AuthorizationFailed. Every refusal stops the hook at once with Azure's own message.
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

function Fail([string] $message) {
    [Console]::Error.WriteLine("azd-postdeploy: $message")
    exit 1
}

# First lines of an Azure CLI error (its own words), on one line.
function FirstLines([string] $text) {
    (($text -split "`r?`n") | Where-Object { $_.Trim() } | Select-Object -First 4) -join ' '
}

function IsLoginProblem([string] $text) {
    $text -match "(?i)az login|AADSTS|refresh token|token.*expired|expired.*token|interaction_required|No subscription found"
}

function IsAuthorizationProblem([string] $text) {
    $text -match '(?i)AuthorizationFailed|does not have authorization|LinkedAuthorizationFailed|Forbidden'
}

$required = 'AZURE_RESOURCE_GROUP', 'AZURE_FUNCTION_APP_NAME', 'EVENTGRID_SYSTEM_TOPIC_NAME',
    'STORAGE_ACCOUNT_NAME', 'INBOX_CONTAINER', 'DEAD_LETTER_CONTAINER', 'BLOB_TRIGGER_FUNCTION_NAME'
foreach ($name in $required) {
    if (-not [Environment]::GetEnvironmentVariable($name)) {
        Fail "$name is not set: run 'azd provision' first (it is an output of infra/main.bicep)"
    }
}
if (-not (Get-Command az -ErrorAction SilentlyContinue)) { Fail 'the Azure CLI (az) is required' }

$rg = $env:AZURE_RESOURCE_GROUP
$app = $env:AZURE_FUNCTION_APP_NAME
$rolesNeeded = "Contributor on resource group '$rg', or Website Contributor plus EventGrid Contributor on it"
$template = Join-Path $PSScriptRoot '..' 'infra' 'eventgrid-subscription.bicep'
if (-not (Test-Path $template)) { Fail 'infra/eventgrid-subscription.bicep not found' }

$attempts = if ($env:EVENTGRID_KEY_WAIT_ATTEMPTS) { [int] $env:EVENTGRID_KEY_WAIT_ATTEMPTS } else { 30 }
$delay = if ($env:EVENTGRID_KEY_WAIT_SECONDS) { [int] $env:EVENTGRID_KEY_WAIT_SECONDS } else { 10 }

# 0. The CLI session: `az account show` reads a local cache and succeeds on an expired login, so
#    ask Entra for a token (only its expiry is printed, never the token).
$errorsFile = New-TemporaryFile
az account get-access-token --query expiresOn --output tsv 2>$errorsFile | Out-Null
if ($LASTEXITCODE -ne 0) {
    $errors = Get-Content -Raw $errorsFile
    Remove-Item $errorsFile
    Fail "the Azure CLI cannot get a token (login missing or expired): $(FirstLines $errors) - run 'az login' (and 'azd auth login'), then 'azd hooks run postdeploy'"
}
Remove-Item $errorsFile

# 1. Wait for the blobs_extension key; the query returns true/false, never the key. A refusal
#    (rights, login, missing app) is final and reported at once; anything else is waited out.
Write-Host "azd-postdeploy: waiting for the blobs_extension system key of $app"
$lastError = ''
for ($attempt = 1; ; $attempt++) {
    $errorsFile = New-TemporaryFile
    $present = az functionapp keys list --resource-group $rg --name $app `
        --query 'systemKeys.blobs_extension != `null`' --output tsv 2>$errorsFile
    $exitCode = $LASTEXITCODE
    $errors = Get-Content -Raw $errorsFile
    Remove-Item $errorsFile
    if ($exitCode -eq 0 -and "$present".Trim() -eq 'true') { break }
    if ($errors) {
        if (IsAuthorizationProblem $errors) {
            Fail "reading the host keys of $app was refused: $(FirstLines $errors) - this hook needs $rolesNeeded"
        }
        if (IsLoginProblem $errors) {
            Fail "the Azure CLI session is not usable: $(FirstLines $errors) - run 'az login', then 'azd hooks run postdeploy'"
        }
        if ($errors -match '(?i)ResourceNotFound|ResourceGroupNotFound|could not be found') {
            Fail "$(FirstLines $errors) - was 'azd provision' run for this environment?"
        }
        $lastError = FirstLines $errors
    }
    if ($attempt -ge $attempts) {
        if ($lastError) { Fail "no blobs_extension key after $attempts attempts; last error: $lastError" }
        Fail "no blobs_extension key after $attempts attempts: is the Event Grid blob trigger '$($env:BLOB_TRIGGER_FUNCTION_NAME)' deployed and the host healthy?"
    }
    # Any request starts a scaled-to-zero Flex host; the blob extension creates its key at start-up.
    try { Invoke-WebRequest -Uri "https://$app.azurewebsites.net/" -TimeoutSec 30 -UseBasicParsing | Out-Null } catch { }
    Start-Sleep -Seconds $delay
}

# 2. Deploy the subscription stage (idempotent).
Write-Host "azd-postdeploy: deploying the Event Grid subscription (BlobCreated in '$($env:INBOX_CONTAINER)' -> $($env:BLOB_TRIGGER_FUNCTION_NAME))"
$errorsFile = New-TemporaryFile
az deployment group create `
    --resource-group $rg `
    --name inqom-bridge-eventgrid-subscription `
    --template-file $template `
    --parameters `
        "systemTopicName=$($env:EVENTGRID_SYSTEM_TOPIC_NAME)" `
        "functionAppName=$app" `
        "blobTriggerFunctionName=$($env:BLOB_TRIGGER_FUNCTION_NAME)" `
        "inboxContainerName=$($env:INBOX_CONTAINER)" `
        "storageAccountName=$($env:STORAGE_ACCOUNT_NAME)" `
        "deadLetterContainerName=$($env:DEAD_LETTER_CONTAINER)" `
    --only-show-errors `
    --output none 2>$errorsFile
if ($LASTEXITCODE -ne 0) {
    $errors = Get-Content -Raw $errorsFile
    Remove-Item $errorsFile
    if (IsAuthorizationProblem $errors) {
        Fail "deploying the Event Grid subscription was refused: $(FirstLines $errors) - this hook needs $rolesNeeded (Website Contributor alone has no Microsoft.EventGrid action)"
    }
    if (IsLoginProblem $errors) {
        Fail "the Azure CLI session is not usable: $(FirstLines $errors) - run 'az login', then 'azd hooks run postdeploy'"
    }
    Fail "deploying infra/eventgrid-subscription.bicep failed: $(FirstLines $errors)"
}
Remove-Item $errorsFile

# 3. Remind the operator of the secrets Bicep leaves to them (best effort, names only).
$secretNames = 'inqom-username', 'inqom-password', 'inqom-client-id', 'inqom-client-secret',
    'enfact-session-key', 'enfact-webhook-secret'
if ($env:KEY_VAULT_NAME) {
    $existing = az keyvault secret list --vault-name $env:KEY_VAULT_NAME --query '[].name' --output tsv 2>$null
    if ($LASTEXITCODE -ne 0) {
        if ("$env:NETWORK_ISOLATION" -eq 'true') {
            Write-Host "azd-postdeploy: could not list secrets in $($env:KEY_VAULT_NAME): with NETWORK_ISOLATION=true its public access is disabled, so run this from inside the virtual network (or with Key Vault Reader or Secrets Officer there); make sure these exist: $($secretNames -join ' ')"
        }
        else {
            Write-Host "azd-postdeploy: could not list secrets in $($env:KEY_VAULT_NAME) (needs Key Vault Reader or Secrets Officer); make sure these exist: $($secretNames -join ' ')"
        }
    }
    else {
        $missing = $secretNames | Where-Object { @($existing) -notcontains $_ }
        if ($missing) {
            Write-Host "azd-postdeploy: secrets still to set in $($env:KEY_VAULT_NAME): $($missing -join ' ')"
            Write-Host "  az keyvault secret set --vault-name $($env:KEY_VAULT_NAME) --name <name> --file <file-with-value> --encoding utf-8"
        }
    }
}
if ($env:ENFACT_WEBHOOK_URL) {
    Write-Host "azd-postdeploy: enFact webhook: $($env:ENFACT_WEBHOOK_URL)?code=<key>  (key: az functionapp function keys list -g $rg -n $app --function-name enfact_webhook)"
}
Write-Host 'azd-postdeploy: done'
