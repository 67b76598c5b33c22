// inqom-bridge: everything `azd provision` creates, composed from one-concern modules.
//
//   modules/identity.bicep     user-assigned managed identity of the app
//   modules/monitoring.bicep   Log Analytics + Application Insights (local auth off)
//   modules/storage.bicep      storage account, containers, ledger table, enFact queues
//   modules/keyvault.bicep     RBAC Key Vault and the secrets the code reads
//   modules/functionapp.bicep  Flex Consumption plan + Python 3.11 function app, all app settings
//   modules/roles.bicep        least-privilege role assignments
//   modules/eventgrid.bicep    Event Grid system topic on the storage account
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

@description('Storage replication (the archive holds accounting originals).')
@allowed([
  'Standard_ZRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_LRS'
])
param storageSkuName string = 'Standard_ZRS'

@description('Upper bound of Flex instances; each instance applies INQOM_MAX_REQUESTS_PER_SECOND on its own.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

// ---- settings an operator chooses per environment (defaults = production / the code's) ----

@description('INQOM_TOKEN_URL (staging: https://staging-auth.inqom.com/identity/connect/token).')
param inqomTokenUrl string = 'https://auth.inqom.com/identity/connect/token'

@description('INQOM_API_BASE_URL.')
param inqomApiBaseUrl string = 'https://wa-fred-accounting-documents-prod.azurewebsites.net'

@description('INQOM_MAX_REQUESTS_PER_SECOND per instance (Inqom answers 429 above about 15/s per client and user).')
param inqomMaxRequestsPerSecond string = '10'

@description('ALLOWED_FOLDER_IDS: comma-separated Inqom accounting folder ids accepted from the inbox; empty = any.')
param allowedFolderIds string = ''

@description('ARCHIVE_ALLOWED_HOSTS: hosts Inqom\'s temporary download URLs may point to.')
param archiveAllowedHosts string = 'fredprodstorage.blob.core.windows.net'

@description('POLL_SCHEDULE: NCRONTAB (UTC) of the status poll.')
param pollSchedule string = '0 */5 * * * *'

@description('ENFACT_API_BASE_URL.')
param enfactApiBaseUrl string = 'https://api5.onfact.be'

@description('ENFACT_COMPANY_FOLDERS: enFact company uuid → Inqom folder id, as uuid=folderId;uuid=folderId.')
param enfactCompanyFolders string = ''

@description('ENFACT_RECONCILE_SCHEDULE: NCRONTAB (UTC) of the daily enFact reconcile.')
param enfactReconcileSchedule string = '0 30 2 * * *'

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
    deadLetterContainerName: storage.outputs.deadLetterContainerName
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  dependsOn: [
    roles
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
    deploymentContainerName: storage.outputs.deploymentContainerName
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    keyVaultUri: keyVault.outputs.uri
    maximumInstanceCount: maximumInstanceCount
    inboxContainerName: storage.outputs.inboxContainerName
    archiveContainerName: storage.outputs.archiveContainerName
    quarantineContainerName: storage.outputs.quarantineContainerName
    ledgerTableName: storage.outputs.ledgerTableName
    enfactQueueName: storage.outputs.enfactQueueName
    inqomTokenUrl: inqomTokenUrl
    inqomApiBaseUrl: inqomApiBaseUrl
    inqomMaxRequestsPerSecond: inqomMaxRequestsPerSecond
    allowedFolderIds: allowedFolderIds
    archiveAllowedHosts: archiveAllowedHosts
    pollSchedule: pollSchedule
    enfactApiBaseUrl: enfactApiBaseUrl
    enfactCompanyFolders: enfactCompanyFolders
    enfactReconcileSchedule: enfactReconcileSchedule
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
output DEPLOYMENT_CONTAINER string = storage.outputs.deploymentContainerName
output DEAD_LETTER_CONTAINER string = storage.outputs.deadLetterContainerName
output LEDGER_TABLE string = storage.outputs.ledgerTableName
output ENFACT_QUEUE string = storage.outputs.enfactQueueName
output ENFACT_POISON_QUEUE string = storage.outputs.enfactPoisonQueueName
output KEY_VAULT_NAME string = keyVault.outputs.name
output KEY_VAULT_URI string = keyVault.outputs.uri
output EVENTGRID_SYSTEM_TOPIC_NAME string = eventGrid.outputs.name
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
