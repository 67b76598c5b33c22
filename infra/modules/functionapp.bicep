// Flex Consumption (FC1) plan + Linux Python function app running as a user-assigned identity.
// Every setting shared/config.py reads is set here (tests/test_infra.py cross-checks the list);
// every storage connection is identity based (service URIs + managedidentity + clientId).
// Two storage accounts: the Functions host's own state and the deployment package live in the
// host account (AzureWebJobsStorage), the documents, ledger and queues in the documents account
// (DocumentStorage) — so the broad roles the host needs never reach the documents (roles.bicep).

@description('Function app name (also the *.azurewebsites.net host name).')
param name string

@description('Flex Consumption plan name.')
param planName string

@description('Azure region (must offer Flex Consumption).')
param location string

@description('Tags applied to the plan and the app (the app also needs azd-service-name for azd deploy).')
param tags object = {}

@description('Tags applied to the app only.')
param appTags object = {}

@description('Resource id of the user-assigned managed identity the app runs as.')
param identityId string

@description('Client id of that identity (AZURE_CLIENT_ID and every __clientId setting).')
param identityClientId string

@description('Primary blob endpoint of the documents storage account (DocumentStorage).')
param blobEndpoint string

@description('Primary queue endpoint of the documents storage account.')
param queueEndpoint string

@description('Primary table endpoint of the documents storage account.')
param tableEndpoint string

@description('Primary blob endpoint of the host storage account (AzureWebJobsStorage, deployment package).')
param hostBlobEndpoint string

@description('Primary queue endpoint of the host storage account.')
param hostQueueEndpoint string

@description('Primary table endpoint of the host storage account.')
param hostTableEndpoint string

@description('Blob container of the host storage account the Flex platform deploys the package from.')
param deploymentContainerName string

@description('Log Analytics workspace receiving the app\'s resource logs (FunctionAppLogs).')
param logAnalyticsWorkspaceId string

@description('Application Insights connection string (ingestion needs an Entra token: local auth is off).')
param applicationInsightsConnectionString string

@description('Key Vault URI (KEY_VAULT_URL).')
param keyVaultUri string

@description('Python version of the Flex runtime.')
@allowed([
  '3.11'
])
param pythonVersion string = '3.11'

@description('Flex maximumInstanceCount (scaleAndConcurrency): on-demand instances per function scale group (blob, HTTP, each other trigger), not per app. 40 is the lowest value every region accepts (below 40 is a regional preview). The Inqom rate is bounded by the fleet-wide INQOM_RATE_LIMIT, not by this (infra/README.md, Scale and the Inqom budget).')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

// ---- issue 22: zone redundancy of the Flex plan (checkov CKV_AZURE_225) ----
@description('Flex plan zoneRedundant. Off by default: Microsoft keeps at least two always-ready instances per function scale group of a zone-redundant Flex app, billed as always-ready (infra/README.md, checkov exceptions). Can only be set where Flex offers zones.')
param zoneRedundant bool = false

@description('Flex scaleAndConcurrency.triggers.http.perInstanceConcurrency: concurrent enFact webhook calls per instance (the webhook makes no Inqom call; set explicitly instead of the language/memory-dependent platform default).')
@minValue(1)
@maxValue(1000)
param httpPerInstanceConcurrency int = 16

// ---- issue 22: network isolation (main.bicep networkIsolation) ----
@description('Subnet (delegated to Microsoft.App/environments) for Flex VNet integration; empty = none. Inbound stays public: Event Grid delivers to the blob trigger webhook over the internet.')
param virtualNetworkSubnetId string = ''

@description('Memory of one Flex instance.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

// ---- application settings read by shared/config.py (defaults = the code's defaults) ----

@description('INQOM_TOKEN_URL: Inqom identity server token endpoint.')
param inqomTokenUrl string = 'https://auth.inqom.com/identity/connect/token'

@description('INQOM_API_BASE_URL: Inqom accounting-documents API base URL.')
param inqomApiBaseUrl string = 'https://wa-fred-accounting-documents-prod.azurewebsites.net'

@description('INQOM_RATE_LIMIT: Inqom requests per second for the whole fleet, per Inqom credential (Inqom refuses above about 15/s).')
param inqomRateLimit string = '12'

@description('INQOM_POLL_SHARE: share of INQOM_RATE_LIMIT reserved for the poller (status polls and archiving).')
param inqomPollShare string = '0.3'

@description('INQOM_MAX_REQUESTS_PER_SECOND: fallback rate of one process when the budget coordination store is unreachable.')
param inqomMaxRequestsPerSecond string = '10'

@description('HTTP_CONNECT_TIMEOUT_SECONDS.')
param httpConnectTimeoutSeconds string = '10'

@description('HTTP_READ_TIMEOUT_SECONDS.')
param httpReadTimeoutSeconds string = '120'

@description('HTTP_MAX_ATTEMPTS.')
param httpMaxAttempts string = '4'

@description('HTTP_BACKOFF_CAP_SECONDS.')
param httpBackoffCapSeconds string = '30'

// Not named *secret*: the Bicep linter (secure-secrets-in-params) reads such a name as a secret value.
@description('SECRET_CACHE_SECONDS: how long a value read from Key Vault is reused before it is read again.')
param keyVaultCacheSeconds string = '300'

@description('INBOX_CONTAINER.')
param inboxContainerName string

@description('ARCHIVE_CONTAINER.')
param archiveContainerName string

@description('QUARANTINE_CONTAINER.')
param quarantineContainerName string

@description('LEDGER_TABLE.')
param ledgerTableName string

@description('LEDGER_BACKUP_CONTAINER.')
param ledgerBackupContainerName string

@description('ENFACT_QUEUE.')
param enfactQueueName string

@description('ALLOWED_FOLDER_IDS: comma-separated Inqom folder ids accepted from the inbox; empty = any.')
param allowedFolderIds string = ''

@description('MAX_UPLOAD_BYTES: largest file sent to Inqom.')
param maxUploadBytes string = '104857600'

@description('ALLOWED_EXTENSIONS: file extensions accepted from the inbox.')
param allowedExtensions string = 'pdf,jpg,jpeg,png,tif,tiff,heic,heif,gif,bmp,webp,xml'

@description('UPLOAD_CLAIM_SECONDS: upload claim length, renewed while the upload runs; at least host.json functionTimeout.')
param uploadClaimSeconds string = '900'

@description('UPLOAD_MAX_ATTEMPTS: upload attempts before a blob is quarantined (keep <= host.json poisonBlobThreshold).')
param uploadMaxAttempts string = '5'

@description('EINVOICE_MAX_PARSE_BYTES: largest file read as a structured e-invoice; a larger one is sent unread.')
param einvoiceMaxParseBytes string = '20971520'

@description('EINVOICE_MAX_PARSE_SECONDS: longest wait for one e-invoice read.')
param einvoiceMaxParseSeconds string = '10'

@description('BUSINESS_DUPLICATES: hold (a second document of one invoice is quarantined as its duplicate) or send.')
@allowed(['hold', 'send'])
param businessDuplicates string = 'hold'

@description('POLL_SCHEDULE: NCRONTAB (UTC) of the status poll.')
param pollSchedule string = '0 */5 * * * *'

@description('POLL_BATCH_SIZE: due documents a tick takes at most (its time budget usually ends it first).')
param pollBatchSize string = '1000'

@description('POLL_TICK_BUDGET_SECONDS.')
param pollTickBudgetSeconds string = '240'

@description('POLL_WORKERS: rows a tick works on at once (threads), all under the Inqom rate budget.')
param pollWorkers string = '8'

@description('POLL_TICK_GRACE_SECONDS: longest wait for one read inside a tick.')
param pollTickGraceSeconds string = '10'

@description('REPAIR_SWEEP_BATCH: ledger rows and inbox blobs the repair sweep examines per poll tick.')
param repairSweepBatch string = '100'

@description('REPAIR_GRACE_MINUTES: an inbox blob this old with no ledger row is adopted by the repair sweep.')
param repairGraceMinutes string = '30'

@description('POLL_FIRST_DELAY_SECONDS: wait between an upload and its first status poll.')
param pollFirstDelaySeconds string = '60'

@description('POLL_MAX_INTERVAL_SECONDS: cap of the backoff between polls of a document still processing.')
param pollMaxIntervalSeconds string = '3600'

@description('POLL_REVIEW_INTERVAL_SECONDS: poll interval of documents awaiting human work in Inqom.')
param pollReviewIntervalSeconds string = '21600'

@description('POLL_MAX_AGE_HOURS.')
param pollMaxAgeHours string = '336'

// Built from environment(): a literal storage suffix is what the no-hardcoded-env-urls linter rule flags.
@description('ARCHIVE_ALLOWED_HOSTS: hosts Inqom\'s temporary download URLs may point to.')
param archiveAllowedHosts string = 'fredprodstorage.blob.${environment().suffixes.storage}'

@description('ENFACT_API_BASE_URL: enFact (onFact) REST API base URL.')
param enfactApiBaseUrl string = 'https://api5.onfact.be'

@description('ENFACT_COMPANY_FOLDERS: uuid=folderId;uuid=folderId.')
param enfactCompanyFolders string = ''

@description('ENFACT_SELLER_IDS: uuid=VATid;uuid=VATid.')
param enfactSellerIds string = ''

@description('ENFACT_RECONCILE_SCHEDULE: NCRONTAB (UTC) of the daily enFact reconcile.')
param enfactReconcileSchedule string = '0 30 2 * * *'

@description('LEDGER_BACKUP_SCHEDULE: NCRONTAB (UTC) of the daily ledger export.')
param ledgerBackupSchedule string = '0 15 3 * * *'

@description('ENFACT_RECONCILE_DAYS: how many days back the reconcile looks for invoices never pushed.')
param enfactReconcileDays string = '7'

@description('WEBHOOK_MAX_BODY_BYTES: largest enFact push body accepted.')
param webhookMaxBodyBytes string = '65536'

// Every application setting, as name → value. FUNCTIONS_WORKER_RUNTIME, FUNCTIONS_EXTENSION_VERSION,
// WEBSITE_RUN_FROM_PACKAGE and the content-share settings are not allowed on Flex Consumption
// (functionAppConfig replaces them); every storage connection is identity based.
var appSettings = {
  AzureWebJobsStorage__blobServiceUri: hostBlobEndpoint
  AzureWebJobsStorage__queueServiceUri: hostQueueEndpoint
  AzureWebJobsStorage__tableServiceUri: hostTableEndpoint
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  DocumentStorage__blobServiceUri: blobEndpoint
  DocumentStorage__queueServiceUri: queueEndpoint
  DocumentStorage__tableServiceUri: tableEndpoint
  DocumentStorage__credential: 'managedidentity'
  DocumentStorage__clientId: identityClientId
  AZURE_CLIENT_ID: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  INQOM_TOKEN_URL: inqomTokenUrl
  INQOM_API_BASE_URL: inqomApiBaseUrl
  INQOM_RATE_LIMIT: inqomRateLimit
  INQOM_POLL_SHARE: inqomPollShare
  INQOM_MAX_REQUESTS_PER_SECOND: inqomMaxRequestsPerSecond
  HTTP_CONNECT_TIMEOUT_SECONDS: httpConnectTimeoutSeconds
  HTTP_READ_TIMEOUT_SECONDS: httpReadTimeoutSeconds
  HTTP_MAX_ATTEMPTS: httpMaxAttempts
  HTTP_BACKOFF_CAP_SECONDS: httpBackoffCapSeconds
  KEY_VAULT_URL: keyVaultUri
  SECRET_CACHE_SECONDS: keyVaultCacheSeconds
  SECRETS_FROM_ENVIRONMENT: 'false'
  INBOX_CONTAINER: inboxContainerName
  ARCHIVE_CONTAINER: archiveContainerName
  QUARANTINE_CONTAINER: quarantineContainerName
  LEDGER_TABLE: ledgerTableName
  LEDGER_BACKUP_CONTAINER: ledgerBackupContainerName
  LEDGER_BACKUP_SCHEDULE: ledgerBackupSchedule
  ENFACT_QUEUE: enfactQueueName
  ALLOWED_FOLDER_IDS: allowedFolderIds
  MAX_UPLOAD_BYTES: maxUploadBytes
  ALLOWED_EXTENSIONS: allowedExtensions
  UPLOAD_CLAIM_SECONDS: uploadClaimSeconds
  UPLOAD_MAX_ATTEMPTS: uploadMaxAttempts
  EINVOICE_MAX_PARSE_BYTES: einvoiceMaxParseBytes
  EINVOICE_MAX_PARSE_SECONDS: einvoiceMaxParseSeconds
  BUSINESS_DUPLICATES: businessDuplicates
  POLL_SCHEDULE: pollSchedule
  POLL_BATCH_SIZE: pollBatchSize
  POLL_TICK_BUDGET_SECONDS: pollTickBudgetSeconds
  POLL_WORKERS: pollWorkers
  POLL_TICK_GRACE_SECONDS: pollTickGraceSeconds
  REPAIR_SWEEP_BATCH: repairSweepBatch
  REPAIR_GRACE_MINUTES: repairGraceMinutes
  POLL_FIRST_DELAY_SECONDS: pollFirstDelaySeconds
  POLL_MAX_INTERVAL_SECONDS: pollMaxIntervalSeconds
  POLL_REVIEW_INTERVAL_SECONDS: pollReviewIntervalSeconds
  POLL_MAX_AGE_HOURS: pollMaxAgeHours
  ARCHIVE_ALLOWED_HOSTS: archiveAllowedHosts
  ENFACT_API_BASE_URL: enfactApiBaseUrl
  ENFACT_COMPANY_FOLDERS: enfactCompanyFolders
  ENFACT_SELLER_IDS: enfactSellerIds
  ENFACT_RECONCILE_SCHEDULE: enfactReconcileSchedule
  ENFACT_RECONCILE_DAYS: enfactReconcileDays
  WEBHOOK_MAX_BODY_BYTES: webhookMaxBodyBytes
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy is the zoneRedundant parameter, off by default: on Flex it keeps two always-ready instances per scale group, billed around the clock; the documents are zone- or geo-redundant in storage and Event Grid retries deliveries for 24 h.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
    zoneRedundant: zoneRedundant
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17: callers (enFact push, Event Grid) cannot present client certificates; endpoints are authenticated by function/system keys and the enFact HMAC signature.
  // checkov:skip=CKV_AZURE_78: Flex Consumption has no FTP/FTPS endpoint; siteConfig.ftpsState is on Flex's deprecation list and newer Flex deployments refuse it (infra/README.md).
  // checkov:skip=CKV_AZURE_212: siteConfig.numberOfWorkers does not apply to Flex Consumption; instances are per function scale group (functionAppConfig.scaleAndConcurrency), and an idle app scales to zero by design.
  // checkov:skip=CKV_AZURE_222: inbound must stay public: enFact pushes to the webhook from the internet and Event Grid delivers to the blob trigger webhook, which cannot be a private endpoint; both are key- and signature-authenticated (networkIsolation closes outbound paths only).
  // checkov:skip=CKV_AZURE_213: App Service health check (siteConfig.healthCheckPath) is not supported on Flex Consumption; failures surface through the operator alerts (alerts.bicep).
  name: name
  location: location
  tags: union(tags, appTags)
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientAffinityEnabled: false
    publicNetworkAccess: 'Enabled'
    // Flex VNet integration (issue 22): all outbound traffic then goes through the subnet.
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    // No ftpsState, alwaysOn, linuxFxVersion, functionAppScaleLimit…: Flex Consumption deprecates them
    // (functionAppConfig replaces them; see infra/README.md for the source).
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      http20Enabled: true
      // Set at creation (not in a separate config resource) so the host never starts unconfigured.
      appSettings: [for setting in items(appSettings): {
        name: setting.key
        value: setting.value
      }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${hostBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        // The only per-trigger setting the schema has (FunctionsScaleAndConcurrencyTriggers: http).
        // Blob (Event Grid) and queue concurrency per instance are host.json settings
        // (extensions.blobs.maxDegreeOfParallelism, extensions.queues.batchSize).
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// No SCM basic (user/password) publishing: azd and the Azure CLI deploy with Entra tokens. Flex
// publishes through the SCM site (/api/publish), so this policy applies to it; there is no `ftp`
// policy because Flex Consumption has no FTP/FTPS endpoint to disable.
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'scm'
  properties: {
    allow: false
  }
}

// Function execution logs to the one Log Analytics workspace (FunctionAppLogs is the log category
// specific to Azure Functions); platform metrics too.
resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: app
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'FunctionAppLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output id string = app.id
output name string = app.name
output defaultHostName string = app.properties.defaultHostName
output planId string = plan.id
