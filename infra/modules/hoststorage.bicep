// Host storage account (AzureWebJobsStorage): the Functions host's own state — blob leases and
// locks, timer schedule status, function keys, the blob trigger's internal control queue and
// receipts, diagnostic events — and the Flex Consumption deployment package.
//
// It is a separate account from the documents on purpose: Microsoft documents the roles the host
// needs on this connection as account-wide (it creates its own containers, queues and monthly
// diagnostic tables, with names the host chooses) and, for blob triggers, Storage Account
// Contributor, a control-plane role. Granted here, they reach no document, ledger row or queue
// message (roles.bicep). Same lock-down as the documents account: Entra only (no shared key, SAS or
// connection string), no anonymous blob access; the network endpoint is public unless main.bicep's
// networkIsolation is on (then publicNetworkAccess Disabled, private endpoints in network.bicep).
// Replication: main.bicep does not pass STORAGE_SKU_NAME here (the module default applies): the
// account holds only rebuildable state (host keys and leases, the deployment package).

@description('Storage account name (3-24 lower-case letters and digits, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags applied to the account.')
param tags object = {}

@description('Replication.')
@allowed([
  'Standard_ZRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_LRS'
])
// Not named skuName: checkov 3.3's directory scan mixes same-named parameters of different files (issue 22).
param hostSkuName string = 'Standard_ZRS'

@description('Blob container the Flex Consumption platform deploys the app package from.')
param deploymentContainerName string = 'app-package'

@description('Days a deleted blob or container can be restored.')
@minValue(7)
@maxValue(365)
param softDeleteRetentionDays int = 7

// ---- issue 22: network isolation (main.bicep networkIsolation) ----
@description('True when main.bicep deploys network.bicep: public network access Disabled, the host reaches the account through its private endpoints (blob, queue, table).')
param networkIsolation bool = false

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_206: zone-redundant (ZRS) by design: this account holds only the host's own state and the deployment package, both rebuilt by `azd deploy`; the Flex app runs in one region, so a geo copy would not keep it running. The documents account is geo-redundant (GZRS).
  // checkov:skip=CKV_AZURE_35: design choice, default public endpoint with Entra-only RBAC access; networkIsolation=true disables public access (private endpoints, network.bicep).
  // checkov:skip=CKV_AZURE_59: design choice as CKV_AZURE_35; networkIsolation=true sets publicNetworkAccess Disabled on this account.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: hostSkuName
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: networkIsolation ? 'Disabled' : 'Enabled'
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

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

output id string = account.id
output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
output deploymentContainerName string = deploymentContainer.name
