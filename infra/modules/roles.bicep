// Role assignments: what the code and the Functions host do, each scoped to the narrowest resource
// it acts on. Built-in roles, except one custom role for the archive (below). No assignment at
// resource-group or subscription scope (the custom role is only *assignable* there).
//
// Documents account (DocumentStorage) — scoped to the container, queue or service used:
//   app → inbox container            Storage Blob Data Owner         the blob trigger's connection (Functions
//                                                                    docs: trigger = Blob Data Owner); read,
//                                                                    delete/move out after archive or quarantine
//   app → archive container          inqom-bridge archive writer     custom role (archiveWriterRole): read, create
//                                    (custom, no Owner)              (blobs/write, add/action), tags/read,
//                                                                    tags/write. No blob delete or move, no
//                                                                    container or immutability-policy action:
//                                                                    the app cannot delete a book, the container
//                                                                    or the retention policy, locked or not
//   app → ledger-backup container    inqom-bridge archive writer     the daily ledger export: the same create-only
//                                    (the same custom role)          writes (staged blocks + commit If-None-Match: *)
//   app → quarantine container       Storage Blob Data Contributor   quarantine moves (copy + metadata), reads
//   app → enfact-invoices            Storage Queue Data Message Sender    HTTP push and reconcile enqueue
//                                    Storage Queue Data Reader +          the queue trigger (Functions docs:
//                                    Storage Queue Data Message Processor trigger = Reader + Message Processor)
//   app → enfact-invoices-poison     Storage Queue Data Message Sender    the host moves a failed message there
//   app → webjobs-blobtrigger-poison Storage Queue Data Message Sender    blob trigger poison messages (trigger's account)
//   app → ledger table               Storage Table Data Contributor  the ledger and the Inqom budget rows (one table)
// Host account (AzureWebJobsStorage + Flex deployment package) — account scope, which is why it is a
// separate account: the host creates containers, queues and monthly diagnostic tables under names
// of its own (blob leases and locks, timer status, keys, the blob trigger's control queue and
// receipts), and Microsoft lists Storage Account Contributor among the blob trigger's host-storage
// roles. None of these reaches a document.
//   app → host account               Storage Blob Data Owner, Storage Queue Data Contributor,
//                                    Storage Table Data Contributor, Storage Account Contributor
// Elsewhere:
//   app → key vault                  Key Vault Secrets User          read the six secrets
//   app → App Insights               Monitoring Metrics Publisher    Entra-authenticated telemetry
//   Event Grid topic → dead-letter container  Storage Blob Data Contributor  undeliverable inbox events
// Optional, when operatorPrincipalId is set (the person or group running the operator CLI):
//   operator → inbox, quarantine     Storage Blob Data Contributor   backfill, replay
//   operator → archive               inqom-bridge archive operator   custom (archiveOperatorRole): read the books,
//                                    (custom, no Owner)              tags/read + filter/action (`find`), tags/write
//                                                                    (`backfill-tags`); no write, delete or policy action
//   operator → ledger table          Storage Table Data Contributor  status/show/export, replay updates a row
//   operator → ledger-backup         Storage Blob Data Reader        backup-ledger.py restore --from-blob

@description('Principal (object) id of the function app\'s user-assigned identity.')
param appPrincipalId string

@description('Principal id of the Event Grid system topic\'s system-assigned identity.')
param eventGridPrincipalId string

@description('Documents storage account name.')
param storageAccountName string

@description('Host storage account name (AzureWebJobsStorage, deployment package).')
param hostStorageAccountName string

@description('Inbox container name.')
param inboxContainerName string

@description('Archive container name.')
param archiveContainerName string

@description('Quarantine container name.')
param quarantineContainerName string

@description('Ledger backup container name (the daily ledger export).')
param ledgerBackupContainerName string

@description('Dead-letter container name (Event Grid writes undeliverable events there).')
param deadLetterContainerName string

@description('enFact queue name.')
param enfactQueueName string

@description('enFact poison queue name.')
param enfactPoisonQueueName string

@description('Blob trigger poison queue name.')
param blobTriggerPoisonQueueName string

@description('Ledger table name.')
param ledgerTableName string

@description('Key Vault name.')
param keyVaultName string

@description('Application Insights component name.')
param applicationInsightsName string

@description('Object id of a user, group or service principal to grant the operator CLI\'s data roles; empty = none.')
param operatorPrincipalId string = ''

@description('Type of operatorPrincipalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

// Built-in role definition ids (identical in every Azure tenant).
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var storageBlobDataReader = '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageQueueDataReader = '19e7f393-937e-4f77-808e-94535e297925'
var storageQueueDataMessageProcessor = '8a0f0c08-91a1-4084-bc3d-661d67233fed'
var storageQueueDataMessageSender = 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var storageAccountContributor = '17d1049b-9a84-46fb-8f53-869881c3d3ab'
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

var grantOperator = !empty(operatorPrincipalId)

// ---- issue 22: custom role for the archive (replaces Storage Blob Data Owner there) ----
//
// Storage Blob Data Contributor (Microsoft's built-in roles page, Storage) holds the actions
// containers/read, containers/write, containers/delete, generateUserDelegationKey/action and the data
// actions blobs/read, blobs/write, blobs/delete, blobs/add/action, blobs/move/action; Owner adds
// containers/* (immutabilityPolicies/delete, /write, /lock, /extend included) and blobs/*. The archive
// code (shared/archive/poll.py, the CLI's backfill-tags) only reads blobs, stages blocks and commits
// them create-only with their index tags, reads tags and sets tags: exactly the data actions below.
// Nothing else: no control-plane action at all, so no container write/delete and no policy action;
// no blob delete or move either (the WORM policy refuses them during retention, and after it the app
// still has no reason to remove a book).
var archiveWriterDataActions = [
  'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read'
  'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write'
  'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action'
  'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags/read'
  'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags/write'
]

// Role definition names are GUIDs; role names are unique per tenant, hence the group's token.
resource archiveWriterRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, 'inqom-bridge-archive-writer')
  properties: {
    roleName: 'inqom-bridge archive writer (${uniqueString(resourceGroup().id)})'
    description: 'Create-only writes, reads and index tags on the inqom-bridge archive and ledger backup; no delete, no container or immutability policy management.'
    type: 'CustomRole'
    permissions: [
      {
        actions: []
        notActions: []
        dataActions: archiveWriterDataActions
        notDataActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

// The operator CLI on the archive (issue 22): Storage Blob Data Reader lacks the tag and filter actions
// `find` and `backfill-tags` use, and Owner, the one built-in role that has them all, includes
// containers/immutabilityPolicies/delete. Defined only when an operator is granted.
var archiveOperatorDataActions = [
  'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read'
  'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags/read'
  'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags/write'
  'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/filter/action'
]

resource archiveOperatorRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (grantOperator) {
  name: guid(resourceGroup().id, 'inqom-bridge-archive-operator')
  properties: {
    roleName: 'inqom-bridge archive operator (${uniqueString(resourceGroup().id)})'
    description: 'Read the inqom-bridge archive, find by index tags and set tags; no write, delete, container or immutability policy management.'
    type: 'CustomRole'
    permissions: [
      {
        actions: []
        notActions: []
        dataActions: archiveOperatorDataActions
        notDataActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

// ---- documents account ----

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource inboxContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: inboxContainerName
}

resource archiveContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: archiveContainerName
}

resource quarantineContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: quarantineContainerName
}

resource ledgerBackupContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: ledgerBackupContainerName
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: deadLetterContainerName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource enfactQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: enfactQueueName
}

resource enfactPoisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: enfactPoisonQueueName
}

resource blobTriggerPoisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: blobTriggerPoisonQueueName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource ledgerTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  parent: tableService
  name: ledgerTableName
}

// ---- host account, vault, telemetry ----

resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: hostStorageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// ---- app identity: documents account ----

resource appInbox 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(inboxContainer.id, appPrincipalId, storageBlobDataOwner)
  scope: inboxContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appArchive 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(archiveContainer.id, appPrincipalId, archiveWriterRole.id)
  scope: archiveContainer
  properties: {
    roleDefinitionId: archiveWriterRole.id
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appLedgerBackup 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(ledgerBackupContainer.id, appPrincipalId, archiveWriterRole.id)
  scope: ledgerBackupContainer
  properties: {
    roleDefinitionId: archiveWriterRole.id
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appQuarantine 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(quarantineContainer.id, appPrincipalId, storageBlobDataContributor)
  scope: quarantineContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Queues (issue 22): the narrowest built-in queue roles for what is done on each queue.
resource appEnfactQueueSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(enfactQueue.id, appPrincipalId, storageQueueDataMessageSender)
  scope: enfactQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataMessageSender)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appEnfactQueueReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(enfactQueue.id, appPrincipalId, storageQueueDataReader)
  scope: enfactQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataReader)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appEnfactQueueProcessor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(enfactQueue.id, appPrincipalId, storageQueueDataMessageProcessor)
  scope: enfactQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataMessageProcessor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appEnfactPoisonQueue 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(enfactPoisonQueue.id, appPrincipalId, storageQueueDataMessageSender)
  scope: enfactPoisonQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataMessageSender)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appBlobTriggerPoisonQueue 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(blobTriggerPoisonQueue.id, appPrincipalId, storageQueueDataMessageSender)
  scope: blobTriggerPoisonQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataMessageSender)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The ledger table only (issue 22): it also holds the Inqom budget rows (shared/inqom/budget_row.py).
resource appTables 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(ledgerTable.id, appPrincipalId, storageTableDataContributor)
  scope: ledgerTable
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// ---- app identity: host account (account scope; see the header) ----

resource appHostBlob 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, appPrincipalId, storageBlobDataOwner)
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appHostQueue 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, appPrincipalId, storageQueueDataContributor)
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appHostTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, appPrincipalId, storageTableDataContributor)
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appHostAccount 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, appPrincipalId, storageAccountContributor)
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageAccountContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// ---- app identity: vault and telemetry ----

resource appKeyVaultSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appPrincipalId, keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, appPrincipalId, monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// ---- Event Grid system topic identity ----

resource eventGridDeadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, eventGridPrincipalId, storageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: eventGridPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// ---- optional operator (CLI) ----

resource operatorInbox 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantOperator) {
  name: guid(inboxContainer.id, operatorPrincipalId, storageBlobDataContributor)
  scope: inboxContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

resource operatorQuarantine 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantOperator) {
  name: guid(quarantineContainer.id, operatorPrincipalId, storageBlobDataContributor)
  scope: quarantineContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

resource operatorArchive 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantOperator) {
  name: guid(archiveContainer.id, operatorPrincipalId, archiveOperatorRole.id)
  scope: archiveContainer
  properties: {
    roleDefinitionId: archiveOperatorRole.id
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

resource operatorLedgerBackup 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantOperator) {
  name: guid(ledgerBackupContainer.id, operatorPrincipalId, storageBlobDataReader)
  scope: ledgerBackupContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataReader)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}

resource operatorLedger 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantOperator) {
  name: guid(ledgerTable.id, operatorPrincipalId, storageTableDataContributor)
  scope: ledgerTable
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
  }
}
