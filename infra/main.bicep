// inqom-bridge: everything `azd provision` creates, composed from one-concern modules.
//
//   modules/identity.bicep     user-assigned managed identity of the app
//   modules/monitoring.bicep   Log Analytics + Application Insights (local auth off)
//   modules/storage.bicep      documents account: containers (archive WORM), ledger, queues, resource logs
//   modules/hoststorage.bicep  host account: AzureWebJobsStorage and the Flex deployment package
//   modules/keyvault.bicep     RBAC Key Vault and the secrets the code reads
//   modules/functionapp.bicep  Flex Consumption plan + Python 3.11 function app, all app settings
//   modules/roles.bicep        least-privilege role assignments
//   modules/eventgrid.bicep    Event Grid system topic on the documents account
//   modules/alerts.bicep       action group (e-mail) + the operator's alerts
//   modules/workbook.bicep     the operator's workbook (workbook.json)
//
// The Event Grid *subscription* (inbox BlobCreated → blob trigger webhook) is the second stage,
// infra/eventgrid-subscription.bicep, deployed after the code by scripts/azd-postdeploy.sh.
// See infra/README.md for secrets, operator permissions and the reasons behind each choice.

targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; seeds every resource name.')
param environmentName string

@minLength(1)
@description('Azure region of every resource (must offer Flex Consumption).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource group to create; empty = rg-<environmentName>.')
param resourceGroupName string = ''

@description('Replication of the documents account (the archive holds ten years of accounting originals). Default Standard_GZRS (issue 22): zone-redundant in the region plus an asynchronous copy in the paired region; Standard_RAGZRS makes that copy readable; Standard_ZRS/LRS for a dev environment. The host account stays ZRS (modules/hoststorage.bicep).')
@allowed([
  'Standard_ZRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_LRS'
])
param storageSkuName string = 'Standard_GZRS'

@description('Flex maximumInstanceCount, per function scale group (blob, HTTP, each other trigger). 40 = the lowest value every region accepts (lower values are a regional preview). The Inqom rate is bounded by INQOM_RATE_LIMIT across all instances, not by this; see infra/README.md (Scale and the Inqom budget) before changing it.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

// ---- settings an operator chooses per environment (defaults = production / the code's) ----

@description('INQOM_TOKEN_URL; empty = by environmentType: production in prod, https://<inqomStagingAuthHost>/identity/connect/token elsewhere (issue 22).')
param inqomTokenUrl string = ''

@description('INQOM_API_BASE_URL; empty = by environmentType: production in prod, Inqom\'s staging (recette) API elsewhere (issue 22).')
param inqomApiBaseUrl string = ''

@description('INQOM_RATE_LIMIT: Inqom requests per second for the whole fleet, per Inqom credential (Inqom answers 429 above about 15/s per client and user). Raise it when Inqom grants more.')
param inqomRateLimit string = '12'

@description('INQOM_POLL_SHARE: share of INQOM_RATE_LIMIT reserved for the poller, so archiving never waits behind a flood of uploads.')
param inqomPollShare string = '0.3'

@description('INQOM_MAX_REQUESTS_PER_SECOND: one process\'s rate when the budget coordination store is unreachable.')
param inqomMaxRequestsPerSecond string = '10'

@description('ALLOWED_FOLDER_IDS: comma-separated Inqom accounting folder ids accepted from the inbox; empty = any.')
param allowedFolderIds string = ''

@description('ARCHIVE_ALLOWED_HOSTS: hosts Inqom\'s temporary download URLs may point to; empty = Inqom\'s production download host in prod only. Outside prod it is required (Inqom\'s staging download host is not documented): the preprovision hook refuses to provision without it.')
param archiveAllowedHosts string = ''

@description('POLL_SCHEDULE: NCRONTAB (UTC) of the status poll.')
param pollSchedule string = '0 */5 * * * *'

@description('ENFACT_API_BASE_URL; empty = the production API in prod only. Outside prod it is required (no enFact staging endpoint is known): the preprovision hook refuses to provision without it (issue 22).')
param enfactApiBaseUrl string = ''

@description('ENFACT_COMPANY_FOLDERS: enFact company uuid → Inqom folder id, as uuid=folderId;uuid=folderId.')
param enfactCompanyFolders string = ''

@description('ENFACT_SELLER_IDS: enFact company uuid → its VAT id, the seller in its invoices\' business key, as uuid=VATid;uuid=VATid.')
param enfactSellerIds string = ''

@description('ENFACT_RECONCILE_SCHEDULE: NCRONTAB (UTC) of the daily enFact reconcile.')
param enfactReconcileSchedule string = '0 30 2 * * *'

@description('LEDGER_BACKUP_SCHEDULE: NCRONTAB (UTC) of the daily ledger export to the ledger-backup container.')
param ledgerBackupSchedule string = '0 15 3 * * *'

// ---- the archive, alerts, operator access ----

@description('Years the archive container\'s WORM policy keeps each archived document (Code de commerce L123-22: ten years).')
@minValue(1)
@maxValue(100)
param archiveRetentionYears int = 10

@description('Set to true once the archive retention policy has been locked (infra/README.md): ARM can no longer update a locked policy.')
param archiveRetentionLocked bool = false

// ---- issue 22: environment type, archive protection, network isolation ----

@description('prod, test or dev (ENVIRONMENT_TYPE); empty = prod when the azd environment name is prod or production (any case), else dev. Sets the safe defaults of the two locks (lockArchiveRetention, protectDocumentsAccount), and which endpoints are the defaults. The preprovision hook applies the same rule.')
@allowed([
  ''
  'dev'
  'test'
  'prod'
])
param environmentType string = ''

// Strings, not bools: azd passes LOCK_ARCHIVE_RETENTION / PROTECT_DOCUMENTS_ACCOUNT through
// main.parameters.json, and an unset variable must mean "the environment's default".
@description('LOCK_ARCHIVE_RETENTION: whether the archive retention policy must be locked (scripts/lock-archive-retention.sh, run by the postprovision hook, locks it and then sets ARCHIVE_RETENTION_LOCKED); empty = true in prod only. Locking is irreversible: the container and its blobs cannot be deleted before their retention ends, by anyone.')
@allowed([
  ''
  'true'
  'false'
])
param lockArchiveRetention string = ''

@description('PROTECT_DOCUMENTS_ACCOUNT: CanNotDelete resource lock on the documents storage account (modules/protection.bicep); empty = true in prod only.')
@allowed([
  ''
  'true'
  'false'
])
param protectDocumentsAccount string = ''

// ---- issue 22: endpoints per environment (production endpoints only where environmentType is prod) ----

@description('Host of Inqom\'s staging (recette) identity server, used for INQOM_TOKEN_URL outside prod. Inqom\'s seed specification writes staging-auth.inqom.com; Inqom\'s other documents write auth-staging.inqom.com. Confirm with Inqom and set INQOM_STAGING_AUTH_HOST (infra/README.md, Environments).')
@allowed([
  'staging-auth.inqom.com'
  'auth-staging.inqom.com'
])
param inqomStagingAuthHost string = 'staging-auth.inqom.com'

// Production endpoints: the code's defaults (shared/config.py INQOM_PROD_*), and enFact's one public API.
var inqomProdTokenUrl = 'https://auth.inqom.com/identity/connect/token'
var inqomProdApiBaseUrl = 'https://wa-fred-accounting-documents-prod.azurewebsites.net'
var enfactProdApiBaseUrl = 'https://api5.onfact.be'
// Built from environment(): a literal storage suffix is what the no-hardcoded-env-urls linter rule flags.
var inqomProdDownloadHost = 'fredprodstorage.blob.${environment().suffixes.storage}'
var inqomStagingTokenUrl = 'https://${inqomStagingAuthHost}/identity/connect/token'
var inqomStagingApiBaseUrl = 'https://wa-fred-accounting-documents-staging.azurewebsites.net'
var isProduction = empty(environmentType) ? contains([
  'prod'
  'production'
], toLower(environmentName)) : environmentType == 'prod'
var effectiveEnvironmentType = empty(environmentType) ? (isProduction ? 'prod' : 'dev') : environmentType
var archiveLockRequired = empty(lockArchiveRetention) ? isProduction : lockArchiveRetention == 'true'
var documentsAccountLocked = empty(protectDocumentsAccount) ? isProduction : protectDocumentsAccount == 'true'
var effectiveInqomTokenUrl = (!empty(inqomTokenUrl)) ? inqomTokenUrl : (isProduction ? inqomProdTokenUrl : inqomStagingTokenUrl)
var effectiveInqomApiBaseUrl = (!empty(inqomApiBaseUrl)) ? inqomApiBaseUrl : (isProduction ? inqomProdApiBaseUrl : inqomStagingApiBaseUrl)
// Outside prod an empty value stays empty: the app then refuses to start (shared/config.py requires a
// URL) rather than talk to production; the preprovision hook stops `azd provision` before that.
var effectiveEnfactApiBaseUrl = (!empty(enfactApiBaseUrl)) ? enfactApiBaseUrl : (isProduction ? enfactProdApiBaseUrl : '')
// Empty outside prod: the app then refuses every download (nothing is archived from a host nobody named).
var effectiveArchiveAllowedHosts = (!empty(archiveAllowedHosts)) ? archiveAllowedHosts : (isProduction ? inqomProdDownloadHost : '')

// ---- issue 22: retention and cost (archive tiering, Log Analytics cap and audit retention) ----

@description('Days after creation an archived document moves to ARCHIVE_TIER (lifecycle rule tier-archive; allowed under WORM); 0 = stays Hot.')
@minValue(0)
param archiveTierAfterDays int = 90

@description('Cool or Cold: tier of archived documents older than archiveTierAfterDays (both online; see infra/README.md for the cost effect).')
@allowed([
  'Cool'
  'Cold'
])
param archiveTier string = 'Cold'

@description('Days each daily ledger backup stays immutable in the ledger-backup container (unlocked time-based retention); the lifecycle rule expire-ledger-backups deletes it the day after.')
@minValue(1)
@maxValue(3650)
param ledgerBackupRetentionDays int = 35

@description('Log Analytics daily ingestion cap in GB; 0 = no cap. Ingestion, audit logs included, stops for the rest of the day when reached.')
@minValue(0)
param logAnalyticsDailyCapGb int = 0

@description('Total retention (days) of the audit log tables (storage resource logs, FunctionAppLogs): 3653 = ten years; 90 of them interactive, the rest long-term retention.')
// Not below the workspace's interactive retention (90 days): total retention cannot be shorter.
@minValue(90)
@maxValue(4383)
param auditLogRetentionDays int = 3653

@description('VNet integration of the app with private endpoints for both storage accounts and Key Vault (modules/network.bicep); public access to them is then closed. The app\'s inbound stays public (Event Grid webhook, enFact push). See infra/README.md, Network isolation.')
param networkIsolation bool = false

@description('E-mail address that receives the alerts. Empty = the alerts notify nobody: the preprovision hook (scripts/azd-preprovision.sh) then refuses to provision prod and prints a warning elsewhere.')
param alertEmail string = ''

@description('Hours after which the oldest pending document raises an alert.')
@minValue(1)
param oldestPendingAlertHours int = 48

@description('Object id of the user or group who runs the operator CLI; empty = no data role is granted to a person.')
param operatorPrincipalId string = ''

@description('Type of operatorPrincipalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

// ---- secret values: empty = set after deployment with `az keyvault secret set` (recommended) ----

@description('Key Vault secret inqom-username; empty = set after deployment.')
@secure()
param inqomUsername string = ''

@description('Key Vault secret inqom-password; empty = set after deployment.')
@secure()
param inqomPassword string = ''

@description('Key Vault secret inqom-client-id; empty = set after deployment.')
@secure()
param inqomClientId string = ''

@description('Key Vault secret inqom-client-secret; empty = set after deployment.')
@secure()
param inqomClientSecret string = ''

@description('Key Vault secret enfact-session-key; empty = set after deployment.')
@secure()
param enfactSessionKey string = ''

@description('Key Vault secret enfact-webhook-secret; empty = set after deployment.')
@secure()
param enfactWebhookSecret string = ''

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  application: 'inqom-bridge'
}
var functionAppName = 'func-${resourceToken}'
// Python v2 name of the Event Grid-sourced blob trigger (functions/… `upload_document`).
var blobTriggerFunctionName = 'upload_document'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
    dailyQuotaGb: logAnalyticsDailyCapGb
    auditTotalRetentionInDays: auditLogRetentionDays
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    skuName: storageSkuName
    archiveRetentionYears: archiveRetentionYears
    archiveRetentionLocked: archiveRetentionLocked
    archiveTierAfterDays: archiveTierAfterDays
    archiveTier: archiveTier
    ledgerBackupRetentionDays: ledgerBackupRetentionDays
    logAnalyticsWorkspaceId: monitoring.outputs.workspaceId
    networkIsolation: networkIsolation
  }
}

module hostStorage 'modules/hoststorage.bicep' = {
  name: 'hoststorage'
  scope: rg
  params: {
    name: 'sth${resourceToken}'
    location: location
    tags: tags
    networkIsolation: networkIsolation
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
    logAnalyticsWorkspaceId: monitoring.outputs.workspaceId
    inqomUsername: inqomUsername
    inqomPassword: inqomPassword
    inqomClientId: inqomClientId
    inqomClientSecret: inqomClientSecret
    enfactSessionKey: enfactSessionKey
    enfactWebhookSecret: enfactWebhookSecret
    networkIsolation: networkIsolation
  }
}

// ---- issue 22: delete protection and network isolation (both optional; see their parameters) ----

module protection 'modules/protection.bicep' = if (documentsAccountLocked) {
  name: 'protection'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
  }
}

module network 'modules/network.bicep' = if (networkIsolation) {
  name: 'network'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    storageAccountId: storage.outputs.id
    hostStorageAccountId: hostStorage.outputs.id
    keyVaultId: keyVault.outputs.id
  }
}

module eventGrid 'modules/eventgrid.bicep' = {
  name: 'eventgrid'
  scope: rg
  params: {
    name: 'evgt-${resourceToken}'
    location: location
    tags: tags
    storageAccountId: storage.outputs.id
    logAnalyticsWorkspaceId: monitoring.outputs.workspaceId
  }
}

// Before the app: the host must find its storage, vault and telemetry permissions at first start.
module roles 'modules/roles.bicep' = {
  name: 'roles'
  scope: rg
  params: {
    appPrincipalId: identity.outputs.principalId
    eventGridPrincipalId: eventGrid.outputs.principalId
    storageAccountName: storage.outputs.name
    hostStorageAccountName: hostStorage.outputs.name
    inboxContainerName: storage.outputs.inboxContainerName
    archiveContainerName: storage.outputs.archiveContainerName
    quarantineContainerName: storage.outputs.quarantineContainerName
    deadLetterContainerName: storage.outputs.deadLetterContainerName
    ledgerBackupContainerName: storage.outputs.ledgerBackupContainerName
    enfactQueueName: storage.outputs.enfactQueueName
    enfactPoisonQueueName: storage.outputs.enfactPoisonQueueName
    blobTriggerPoisonQueueName: storage.outputs.blobTriggerPoisonQueueName
    ledgerTableName: storage.outputs.ledgerTableName
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    operatorPrincipalId: operatorPrincipalId
    operatorPrincipalType: operatorPrincipalType
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  dependsOn: [
    roles
    network
  ]
  params: {
    name: functionAppName
    planName: 'asp-${resourceToken}'
    location: location
    tags: tags
    appTags: {
      'azd-service-name': 'api'
    }
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    tableEndpoint: storage.outputs.tableEndpoint
    hostBlobEndpoint: hostStorage.outputs.blobEndpoint
    hostQueueEndpoint: hostStorage.outputs.queueEndpoint
    hostTableEndpoint: hostStorage.outputs.tableEndpoint
    deploymentContainerName: hostStorage.outputs.deploymentContainerName
    logAnalyticsWorkspaceId: monitoring.outputs.workspaceId
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    keyVaultUri: keyVault.outputs.uri
    maximumInstanceCount: maximumInstanceCount
    inboxContainerName: storage.outputs.inboxContainerName
    archiveContainerName: storage.outputs.archiveContainerName
    quarantineContainerName: storage.outputs.quarantineContainerName
    ledgerTableName: storage.outputs.ledgerTableName
    ledgerBackupContainerName: storage.outputs.ledgerBackupContainerName
    enfactQueueName: storage.outputs.enfactQueueName
    inqomTokenUrl: effectiveInqomTokenUrl
    inqomApiBaseUrl: effectiveInqomApiBaseUrl
    inqomRateLimit: inqomRateLimit
    inqomPollShare: inqomPollShare
    inqomMaxRequestsPerSecond: inqomMaxRequestsPerSecond
    allowedFolderIds: allowedFolderIds
    archiveAllowedHosts: effectiveArchiveAllowedHosts
    pollSchedule: pollSchedule
    enfactApiBaseUrl: effectiveEnfactApiBaseUrl
    enfactCompanyFolders: enfactCompanyFolders
    enfactSellerIds: enfactSellerIds
    enfactReconcileSchedule: enfactReconcileSchedule
    ledgerBackupSchedule: ledgerBackupSchedule
    virtualNetworkSubnetId: networkIsolation ? network.outputs.appSubnetId : ''
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    location: location
    tags: tags
    namePrefix: 'inqom-bridge-${resourceToken}'
    alertEmail: alertEmail
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    logAnalyticsWorkspaceId: monitoring.outputs.workspaceId
    eventGridSystemTopicId: eventGrid.outputs.id
    oldestPendingAlertHours: oldestPendingAlertHours
  }
}

module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    location: location
    tags: tags
    applicationInsightsId: monitoring.outputs.applicationInsightsId
  }
}

// ---- outputs (azd stores them in .azure/<env>/.env; the post-deploy hook reads them) ----

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output FUNCTION_APP_URL string = 'https://${functionApp.outputs.defaultHostName}'
// Function-level key required: append ?code=<key from `az functionapp function keys list`>.
output ENFACT_WEBHOOK_URL string = 'https://${functionApp.outputs.defaultHostName}/api/enfact/invoices'
// Event Grid delivery endpoint without its blobs_extension key (the subscription adds it).
output BLOB_TRIGGER_WEBHOOK_URL string = 'https://${functionApp.outputs.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${blobTriggerFunctionName}'
output BLOB_TRIGGER_FUNCTION_NAME string = blobTriggerFunctionName
output STORAGE_ACCOUNT_NAME string = storage.outputs.name
output INBOX_CONTAINER string = storage.outputs.inboxContainerName
output ARCHIVE_CONTAINER string = storage.outputs.archiveContainerName
output QUARANTINE_CONTAINER string = storage.outputs.quarantineContainerName
output HOST_STORAGE_ACCOUNT_NAME string = hostStorage.outputs.name
output DEPLOYMENT_CONTAINER string = hostStorage.outputs.deploymentContainerName
output DEAD_LETTER_CONTAINER string = storage.outputs.deadLetterContainerName
output LEDGER_TABLE string = storage.outputs.ledgerTableName
output LEDGER_BACKUP_CONTAINER string = storage.outputs.ledgerBackupContainerName
output ENFACT_QUEUE string = storage.outputs.enfactQueueName
output ENFACT_POISON_QUEUE string = storage.outputs.enfactPoisonQueueName
output BLOB_TRIGGER_POISON_QUEUE string = storage.outputs.blobTriggerPoisonQueueName
output ARCHIVE_RETENTION_DAYS int = storage.outputs.archiveRetentionDays
output KEY_VAULT_NAME string = keyVault.outputs.name
output KEY_VAULT_URI string = keyVault.outputs.uri
output EVENTGRID_SYSTEM_TOPIC_NAME string = eventGrid.outputs.name
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output ALERT_ACTION_GROUP_ID string = alerts.outputs.actionGroupId
output WORKBOOK_ID string = workbook.outputs.id
// issue 22: what the postprovision hook (scripts/lock-archive-retention.sh) and the operator read.
output ENVIRONMENT_TYPE string = effectiveEnvironmentType
output ARCHIVE_RETENTION_LOCK_REQUIRED bool = archiveLockRequired
output DOCUMENTS_ACCOUNT_DELETE_LOCK bool = documentsAccountLocked
output NETWORK_ISOLATION bool = networkIsolation
