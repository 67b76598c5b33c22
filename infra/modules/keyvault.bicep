// Key Vault holding the six secrets the code reads (shared/secrets.py SECRET_NAMES).
// Authorisation is Azure RBAC only (no access policies); soft delete + purge protection on.
//
// Secret values: each has a @secure() parameter that defaults to ''. An empty value means
// "set after deployment" and the secret resource is then NOT deployed, so a re-provision never
// overwrites a value an operator set with `az keyvault secret set` (see infra/README.md).
// Deploying a secret through ARM is a control-plane write (Microsoft.KeyVault/vaults/secrets/write,
// held by Contributor): the deploying principal needs no data-plane role for it.

@description('Key Vault name (3-24 characters, globally unique; purge protection reserves it 90 days after deletion).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags applied to the vault.')
param tags object = {}

@description('Log Analytics workspace receiving the vault audit log.')
param logAnalyticsWorkspaceId string

@description('Days a deleted vault or secret can be recovered.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

// ---- issue 22: network isolation (main.bicep networkIsolation) ----
@description('True when main.bicep deploys network.bicep: public network access Disabled, the app reads secrets through the vault\'s private endpoint. Secrets deployed by ARM still work (control plane); `az keyvault secret set` must then run from inside the VNet.')
param networkIsolation bool = false

@description('Secret inqom-username; empty = set after deployment.')
@secure()
param inqomUsername string = ''

@description('Secret inqom-password; empty = set after deployment.')
@secure()
param inqomPassword string = ''

@description('Secret inqom-client-id; empty = set after deployment.')
@secure()
param inqomClientId string = ''

@description('Secret inqom-client-secret; empty = set after deployment.')
@secure()
param inqomClientSecret string = ''

@description('Secret enfact-session-key; empty = set after deployment.')
@secure()
param enfactSessionKey string = ''

@description('Secret enfact-webhook-secret; empty = set after deployment.')
@secure()
param enfactWebhookSecret string = ''

// Every secret name the code reads (tests/test_infra.py checks this list against
// shared.secrets.SECRET_NAMES), with the value to deploy when one is supplied.
var secrets = [
  {
    name: 'inqom-username'
    value: inqomUsername
  }
  {
    name: 'inqom-password'
    value: inqomPassword
  }
  {
    name: 'inqom-client-id'
    value: inqomClientId
  }
  {
    name: 'inqom-client-secret'
    value: inqomClientSecret
  }
  {
    name: 'enfact-session-key'
    value: enfactSessionKey
  }
  {
    name: 'enfact-webhook-secret'
    value: enfactWebhookSecret
  }
]

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: design choice, default public endpoint with RBAC-only data access; networkIsolation=true disables public access (private endpoint, network.bicep).
  // checkov:skip=CKV_AZURE_189: as CKV_AZURE_109 (public network access): Disabled when networkIsolation=true.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: networkIsolation ? 'Disabled' : 'Enabled'
    networkAcls: {
      defaultAction: networkIsolation ? 'Deny' : 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource secretValues 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [for secret in secrets: if (!empty(secret.value)) {
  // checkov:skip=CKV_AZURE_41: third-party credentials (Inqom, enFact) have no fixed lifetime; an exp date would make the app fail when it passes. Rotate by setting a new version.
  parent: vault
  name: secret.name
  properties: {
    value: secret.value
    contentType: 'text/plain'
    attributes: {
      enabled: true
    }
  }
}]

resource auditLog 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'audit'
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

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
