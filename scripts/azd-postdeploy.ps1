# azd postdeploy hook (azure.yaml, Windows): same steps as scripts/azd-postdeploy.sh.
# Creates or updates the Event Grid subscription (infra/eventgrid-subscription.bicep) that
# delivers BlobCreated events of the inbox to the `upload_document` blob trigger, once the
# host has created its blobs_extension system key. The key itself is read by ARM (listKeys in
# the template): this script never sees, prints or passes it.
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

function Fail([string] $message) {
    [Console]::Error.WriteLine("azd-postdeploy: $message")
    exit 1
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
$template = Join-Path $PSScriptRoot '..' 'infra' 'eventgrid-subscription.bicep'
if (-not (Test-Path $template)) { Fail 'infra/eventgrid-subscription.bicep not found' }

$attempts = if ($env:EVENTGRID_KEY_WAIT_ATTEMPTS) { [int] $env:EVENTGRID_KEY_WAIT_ATTEMPTS } else { 30 }
$delay = if ($env:EVENTGRID_KEY_WAIT_SECONDS) { [int] $env:EVENTGRID_KEY_WAIT_SECONDS } else { 10 }

# 1. Wait for the blobs_extension key; the query returns true/false, never the key.
Write-Host "azd-postdeploy: waiting for the blobs_extension system key of $app"
for ($attempt = 1; ; $attempt++) {
    $present = az functionapp keys list --resource-group $rg --name $app `
        --query 'systemKeys.blobs_extension != `null`' --output tsv 2>$null
    if ($LASTEXITCODE -eq 0 -and "$present".Trim() -eq 'true') { break }
    if ($attempt -ge $attempts) {
        Fail "no blobs_extension key after $attempts attempts: is the Event Grid blob trigger '$($env:BLOB_TRIGGER_FUNCTION_NAME)' deployed and the host healthy?"
    }
    # Any request starts a scaled-to-zero Flex host; the blob extension creates its key at start-up.
    try { Invoke-WebRequest -Uri "https://$app.azurewebsites.net/" -TimeoutSec 30 -UseBasicParsing | Out-Null } catch { }
    Start-Sleep -Seconds $delay
}

# 2. Deploy the subscription stage (idempotent).
Write-Host "azd-postdeploy: deploying the Event Grid subscription (BlobCreated in '$($env:INBOX_CONTAINER)' -> $($env:BLOB_TRIGGER_FUNCTION_NAME))"
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
    --output none
if ($LASTEXITCODE -ne 0) { Fail 'deploying infra/eventgrid-subscription.bicep failed' }

# 3. Remind the operator of the secrets Bicep leaves to them (best effort, names only).
$secretNames = 'inqom-username', 'inqom-password', 'inqom-client-id', 'inqom-client-secret',
    'enfact-session-key', 'enfact-webhook-secret'
if ($env:KEY_VAULT_NAME) {
    $existing = az keyvault secret list --vault-name $env:KEY_VAULT_NAME --query '[].name' --output tsv 2>$null
    if ($LASTEXITCODE -ne 0) {
        Write-Host "azd-postdeploy: could not list secrets in $($env:KEY_VAULT_NAME) (needs Key Vault Reader or Secrets Officer); make sure these exist: $($secretNames -join ' ')"
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
