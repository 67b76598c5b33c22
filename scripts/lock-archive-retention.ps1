# azd postprovision hook (azure.yaml) on Windows: same as lock-archive-retention.sh (read it for why).
$ErrorActionPreference = 'Stop'
if ($env:ARCHIVE_RETENTION_LOCK_REQUIRED -ne 'true') {
    Write-Host "lock-archive-retention: not required in this environment (ENVIRONMENT_TYPE=$($env:ENVIRONMENT_TYPE)); the archive retention policy stays unlocked (no delete protection)."
    exit 0
}
$rg = $env:AZURE_RESOURCE_GROUP; $account = $env:STORAGE_ACCOUNT_NAME; $container = $env:ARCHIVE_CONTAINER
if (-not $rg -or -not $account -or -not $container) { throw 'lock-archive-retention: run azd provision first (outputs missing)' }
$policy = az storage container immutability-policy show --resource-group $rg --account-name $account --container-name $container -o json | ConvertFrom-Json
if ($LASTEXITCODE -ne 0) { throw "lock-archive-retention: cannot read the retention policy of $account/$container" }
if ($policy.state -eq 'Locked') {
    Write-Host "lock-archive-retention: $account/$container retention policy is already locked."
} elseif ($policy.state -eq 'Unlocked') {
    az storage container immutability-policy lock --resource-group $rg --account-name $account --container-name $container --if-match $policy.etag -o none
    if ($LASTEXITCODE -ne 0) { throw 'lock-archive-retention: locking the retention policy was refused' }
    Write-Host "lock-archive-retention: locked the retention policy of $account/$container."
} else {
    throw "lock-archive-retention: unexpected retention policy state '$($policy.state)'"
}
if (Get-Command azd -ErrorAction SilentlyContinue) {
    azd env set ARCHIVE_RETENTION_LOCKED true
    if ($LASTEXITCODE -ne 0) { throw 'lock-archive-retention: the policy is locked, but azd env set ARCHIVE_RETENTION_LOCKED true failed: set it by hand' }
}
