// Event Grid system topic on the storage account. It is provisioned with the rest of the
// infrastructure; its subscription (BlobCreated in the inbox → blob-extension webhook) lives in
// infra/eventgrid-subscription.bicep and is deployed by scripts/azd-postdeploy.sh once the
// code is running, because the webhook URL needs the host's `blobs_extension` system key, which
// only exists after the blob trigger has been deployed and the host has started.

@description('System topic name.')
param name string

@description('Azure region (a storage system topic must be in the storage account\'s region).')
param location string

@description('Tags applied to the topic.')
param tags object = {}

@description('Resource id of the storage account whose blob events are published.')
param storageAccountId string

@description('Log Analytics workspace receiving the topic\'s delivery-failure log and metrics.')
param logAnalyticsWorkspaceId string

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: name
  location: location
  tags: tags
  // The identity writes undeliverable events to the dead-letter container (role in roles.bicep).
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: storageAccountId
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

// DeliveryFailures is the resource log a system topic offers (PublishFailures and DataPlaneRequests
// are for custom topics and domains); the metrics include DeadLetteredCount, which alerts.bicep uses.
resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: systemTopic
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'DeliveryFailures'
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

output id string = systemTopic.id
output name string = systemTopic.name
output principalId string = systemTopic.identity.principalId
