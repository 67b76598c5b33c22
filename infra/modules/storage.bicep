// Storage account holding the documents (inbox → archive | quarantine), the ledger table,
// the enFact queue, the Flex Consumption deployment package and the Functions host state.
// Access is Microsoft Entra only: shared keys (and therefore SAS and connection strings)
// are disabled, nothing is anonymously readable, TLS 1.2+ over HTTPS only.

@description('Storage account name (3-24 lower-case letters and digits, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags applied to the account.')
param tags object = {}

@description('Replication. Zone-redundant by default: the archive holds accounting originals.')
@allowed([
  'Standard_ZRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_LRS'
])
param skuName string = 'Standard_ZRS'

@description('Blob container watched for new documents (INBOX_CONTAINER).')
param inboxContainerName string = 'inbox'

@description('Blob container for verified originals (ARCHIVE_CONTAINER).')
param archiveContainerName string = 'archive'

@description('Blob container for documents that cannot be sent (QUARANTINE_CONTAINER).')
param quarantineContainerName string = 'quarantine'

@description('Blob container the Flex Consumption platform deploys the app package from.')
param deploymentContainerName string = 'app-package'

@description('Blob container where Event Grid dead-letters inbox events it could not deliver.')
param deadLetterContainerName string = 'eventgrid-deadletter'

@description('Table holding one row per document (LEDGER_TABLE).')
param ledgerTableName string = 'ledger'

@description('Queue of accepted enFact pushes (ENFACT_QUEUE); its -poison queue is declared too.')
param enfactQueueName string = 'enfact-invoices'

@description('Days a deleted blob or container can be restored.')
@minValue(7)
@maxValue(365)
param softDeleteRetentionDays int = 30

var blobContainerNames = [
  inboxContainerName
  archiveContainerName
  quarantineContainerName
  deploymentContainerName
  deadLetterContainerName
]

// The Functions host moves a message here after maxDequeueCount failures; declared so that
// it exists (and can be monitored) before the first failure.
var enfactPoisonQueueName = '${enfactQueueName}-poison'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Flex Consumption without VNet integration reaches storage over the public endpoint (no fixed outbound IPs to allow-list); access is Entra-only and RBAC-scoped.
  // checkov:skip=CKV_AZURE_59: same as CKV_AZURE_35; anonymous blob access and shared-key access are both disabled.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: softDeleteRetentionDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: softDeleteRetentionDays
    }
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for containerName in blobContainerNames: {
  parent: blobService
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource enfactQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: enfactQueueName
}

resource enfactPoisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: enfactPoisonQueueName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource ledgerTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: ledgerTableName
}

output id string = account.id
output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
output inboxContainerName string = inboxContainerName
output archiveContainerName string = archiveContainerName
output quarantineContainerName string = quarantineContainerName
output deploymentContainerName string = deploymentContainerName
output deadLetterContainerName string = deadLetterContainerName
output ledgerTableName string = ledgerTable.name
output enfactQueueName string = enfactQueue.name
output enfactPoisonQueueName string = enfactPoisonQueue.name
