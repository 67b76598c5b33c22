// Documents storage account (DocumentStorage): inbox → archive | quarantine, the ledger table and
// its daily backups (ledger-backup), the enFact queues and the blob trigger's poison queue. The
// Functions host's own state and the Flex deployment package live in a separate account
// (hoststorage.bicep), so that the broad roles the host needs never reach the documents.
// Access is Microsoft Entra only: shared keys (and therefore SAS and connection strings)
// are disabled, nothing is anonymously readable, TLS 1.2+ over HTTPS only.
//
// The archive is the books (Code de commerce art. L123-22: ten years): blob versioning on the
// account, a container-level time-based retention (WORM) policy on the archive container, created
// unlocked, then locked by the postprovision hook where LOCK_ARCHIVE_RETENTION is true (empty: prod only;
// scripts/lock-archive-retention.sh, infra/README.md). The app only ever creates archive
// blobs (staged blocks + Put Block List with If-None-Match: *), which such a policy permits.

@description('Storage account name (3-24 lower-case letters and digits, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags applied to the account.')
param tags object = {}

@description('Replication. Geo-zone-redundant by default (issue 22): the archive holds ten years of accounting originals, and ZRS keeps every copy in one region. RA-GZRS adds a readable secondary; ZRS or LRS cost less for dev.')
@allowed([
  'Standard_ZRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_LRS'
])
param skuName string = 'Standard_GZRS'

@description('Blob container watched for new documents (INBOX_CONTAINER).')
param inboxContainerName string = 'inbox'

@description('Blob container for verified originals (ARCHIVE_CONTAINER).')
param archiveContainerName string = 'archive'

@description('Blob container for documents that cannot be sent (QUARANTINE_CONTAINER).')
param quarantineContainerName string = 'quarantine'

@description('Blob container of the daily ledger export (LEDGER_BACKUP_CONTAINER).')
param ledgerBackupContainerName string = 'ledger-backup'

@description('Blob container where Event Grid dead-letters inbox events it could not deliver.')
param deadLetterContainerName string = 'eventgrid-deadletter'

@description('Table holding one row per document (LEDGER_TABLE).')
param ledgerTableName string = 'ledger'

@description('Queue of accepted enFact pushes (ENFACT_QUEUE); its -poison queue is declared too.')
param enfactQueueName string = 'enfact-invoices'

@description('Days a deleted blob or container can be restored; also how long previous blob versions outside the archive are kept.')
@minValue(7)
@maxValue(365)
param softDeleteRetentionDays int = 30

@description('Years the archive container\'s time-based retention (WORM) policy keeps every archived blob from its creation (L123-22: ten years).')
@minValue(1)
@maxValue(100)
param archiveRetentionYears int = 10

@description('True once an operator has locked the archive retention policy: a locked policy accepts no PUT (only extend), so the template stops declaring it.')
param archiveRetentionLocked bool = false

@description('Days each daily ledger backup is kept: immutable (unlocked time-based retention) for that long, deleted by the lifecycle rule expire-ledger-backups the day after.')
@minValue(1)
@maxValue(3650)
param ledgerBackupRetentionDays int = 35

@description('Log Analytics workspace receiving the blob, queue and table resource logs.')
param logAnalyticsWorkspaceId string

// ---- issue 22: archive tiering (lifecycle rule 'tier-archive') ----
@description('Days after creation an archived document moves to archiveTier (lifecycle management; allowed under the WORM policy). 0 = never, it stays Hot.')
@minValue(0)
param archiveTierAfterDays int = 90

@description('Tier of archived documents older than archiveTierAfterDays: Cool (30-day minimum) or Cold (90-day minimum). Both stay online (read at once, no rehydration); Archive is not offered: the operator CLI and Inqom re-reads need online blobs.')
@allowed([
  'Cool'
  'Cold'
])
param archiveTier string = 'Cold'

// ---- issue 22: network isolation (main.bicep networkIsolation) ----
@description('True when main.bicep deploys network.bicep: the public endpoint refuses every caller except trusted Azure services (Event Grid dead-lettering with its managed identity, Azure Monitor); the app reaches the account through its private endpoints.')
param networkIsolation bool = false

// Containers the app reads and writes but never needs WORM on (the archive and the ledger backup are declared on their own).
var blobContainerNames = [
  inboxContainerName
  quarantineContainerName
  deadLetterContainerName
]

// Whole days, leap days included (one per four years, rounded up).
var archiveRetentionDays = (archiveRetentionYears * 365) + ((archiveRetentionYears + 3) / 4)

// The blob trigger writes poison-blob messages to this queue on the storage account of its
// connection (DocumentStorage); declared so it exists, can be scoped in roles.bicep and monitored.
var blobTriggerPoisonQueueName = 'webjobs-blobtrigger-poison'

// The Functions host moves a message here after maxDequeueCount failures; declared so that
// it exists (and can be monitored) before the first failure.
var enfactPoisonQueueName = '${enfactQueueName}-poison'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: design choice, default public endpoint with Entra-only RBAC access; networkIsolation=true sets defaultAction Deny with private endpoints (network.bicep).
  // checkov:skip=CKV_AZURE_59: design choice as CKV_AZURE_35; networkIsolation=true closes the public endpoint to all but trusted Azure services (Event Grid dead-letter).
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
    // Isolated: Enabled + Deny, not Disabled: Disabled would also refuse the trusted-service exception
    // through which Event Grid writes dead-lettered inbox events (infra/README.md, Network isolation).
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: networkIsolation ? 'Deny' : 'Allow'
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
    // Versioning: every overwrite or delete keeps the previous version (the archive never has one
    // while its retention runs: the policy refuses both). Previous versions elsewhere are deleted by
    // the lifecycle rule below after softDeleteRetentionDays.
    isVersioningEnabled: true
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

resource archiveContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: archiveContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Container-level time-based retention (WORM): blobs can be created and read, not overwritten or
// deleted, for archiveRetentionDays from each blob's creation. Created unlocked (the only state ARM
// creates); lock it with `az storage container immutability-policy lock` (infra/README.md), then
// set ARCHIVE_RETENTION_LOCKED=true so later provisions leave the locked policy alone.
resource archiveRetention 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2023-05-01' = if (!archiveRetentionLocked) {
  parent: archiveContainer
  name: 'default'
  properties: {
    immutabilityPeriodSinceCreationInDays: archiveRetentionDays
    allowProtectedAppendWrites: false
  }
}

// The daily ledger export (shared/ledger/backup.py): written create-only by the app, as the archive is.
resource ledgerBackupContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: ledgerBackupContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Each backup is immutable for ledgerBackupRetentionDays (a bad day cannot erase the good copies
// before it), then deleted by the lifecycle rule expire-ledger-backups. Left unlocked on purpose:
// an unlocked policy can still be shortened or removed by an administrator; locking it is not needed
// for a backup, which the books (the archive) do not depend on.
resource ledgerBackupRetention 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2023-05-01' = {
  parent: ledgerBackupContainer
  name: 'default'
  properties: {
    immutabilityPeriodSinceCreationInDays: ledgerBackupRetentionDays
    allowProtectedAppendWrites: false
  }
}

// Previous versions (overwrites and deletes in the inbox, quarantine, dead-letter container) are
// deleted after the soft-delete window; the archive is left out (its retention forbids deletes).
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'expire-previous-versions'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [for containerName in blobContainerNames: '${containerName}/']
            }
            actions: {
              version: {
                delete: {
                  daysAfterCreationGreaterThan: softDeleteRetentionDays
                }
              }
            }
          }
        }
        // issue 22: archived documents move to Cool or Cold after archiveTierAfterDays (disabled at 0).
        // A tier change is not among the operations a WORM policy refuses: it rewrites no data, deletes nothing.
        {
          name: 'tier-archive'
          enabled: archiveTierAfterDays > 0
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${archiveContainerName}/'
              ]
            }
            actions: {
              baseBlob: (archiveTier == 'Cool') ? {
                tierToCool: {
                  daysAfterCreationGreaterThan: archiveTierAfterDays
                }
              } : {
                tierToCold: {
                  daysAfterCreationGreaterThan: archiveTierAfterDays
                }
              }
            }
          }
        }
        // The ledger backups go the day after their retention ends (the policy refuses it before); the
        // version a delete leaves behind (versioning is on) goes with it.
        {
          name: 'expire-ledger-backups'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${ledgerBackupContainerName}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterCreationGreaterThan: ledgerBackupRetentionDays + 1
                }
              }
              version: {
                delete: {
                  daysAfterCreationGreaterThan: ledgerBackupRetentionDays + 1
                }
              }
            }
          }
        }
      ]
    }
  }
  dependsOn: [
    blobService
  ]
}

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

resource blobTriggerPoisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: blobTriggerPoisonQueueName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource ledgerTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: ledgerTableName
}

// Resource logs of the three services to the one workspace (StorageBlobLogs, StorageQueueLogs,
// StorageTableLogs). Writes and deletes only: they are the audit trail of the documents, and the
// poison-queue alert reads PutMessage from StorageQueueLogs. Reads (the host's queue polling alone is
// several per second) would multiply the ingestion cost; add StorageRead to investigate an access.
resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: blobService
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'Transaction'
        enabled: true
      }
    ]
  }
}

resource queueDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: queueService
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'Transaction'
        enabled: true
      }
    ]
  }
}

resource tableDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: tableService
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'Transaction'
        enabled: true
      }
    ]
  }
}

output id string = account.id
output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
output inboxContainerName string = inboxContainerName
output archiveContainerName string = archiveContainer.name
output quarantineContainerName string = quarantineContainerName
output deadLetterContainerName string = deadLetterContainerName
output ledgerBackupContainerName string = ledgerBackupContainer.name
output ledgerTableName string = ledgerTable.name
output enfactQueueName string = enfactQueue.name
output enfactPoisonQueueName string = enfactPoisonQueue.name
output blobTriggerPoisonQueueName string = blobTriggerPoisonQueue.name
output archiveRetentionDays int = archiveRetentionDays
