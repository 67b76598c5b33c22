// Second deployment stage (resource-group scope): the Event Grid subscription that turns a new
// blob in the inbox into a call of the `upload_document` blob trigger (source: EventGrid).
//
// Why a second stage, run by scripts/azd-postdeploy.sh after `azd deploy`:
//   * the endpoint must carry the host's `blobs_extension` system key, which the Functions host
//     creates only once the code containing the Event Grid blob trigger is deployed and running;
//   * Event Grid validates a webhook when the subscription is created, and only the running blob
//     extension answers that handshake.
// During `azd provision` neither holds yet, so this cannot be part of infra/main.bicep.
// The key is read by ARM itself (listKeys below): it never passes through the operator's shell,
// a parameter file or the deployment's parameters.

@description('Event Grid system topic created by infra/modules/eventgrid.bicep.')
param systemTopicName string

@description('Function app hosting the blob trigger.')
param functionAppName string

@description('Python v2 function name of the Event Grid-sourced blob trigger.')
param blobTriggerFunctionName string = 'upload_document'

@description('Inbox container (INBOX_CONTAINER): only its BlobCreated events are delivered.')
param inboxContainerName string = 'inbox'

@description('Storage account that holds the dead-letter container.')
param storageAccountName string

@description('Container receiving events Event Grid could not deliver.')
param deadLetterContainerName string = 'eventgrid-deadletter'

@description('Event subscription name.')
param subscriptionName string = 'inbox-blob-created'

@description('Delivery attempts before an event is dead-lettered.')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

@description('Minutes an event is retried before it is dead-lettered.')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: systemTopicName
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

var webhookBaseUrl = 'https://${functionApp.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${blobTriggerFunctionName}'

resource inboxBlobCreated 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: systemTopic
  name: subscriptionName
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: '${webhookBaseUrl}&code=${listKeys('${functionApp.id}/host/default', '2024-04-01').systemKeys.blobs_extension}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${inboxContainerName}/'
      isSubjectCaseSensitive: false
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

output subscriptionName string = inboxBlobCreated.name
output webhookUrlWithoutKey string = webhookBaseUrl
