// The operator's morning picture, as an Azure Monitor workbook linked to Application Insights
// (it appears under the component's Workbooks): documents per day by outcome, pending documents and
// the age of the oldest, drop-to-archive time (p50/p95), Inqom calls by status and 429s, throttle
// waits, top quarantine reasons. The content is workbook.json (Notebook/1.0), with the component id
// substituted for __APPINSIGHTS_ID__; tests/test_infra.py checks its queries against the names the
// app emits (shared/metrics.py, the log lines of shared/archiver.py and shared/quarantine.py).

@description('Azure region of the workbook resource.')
param location string

@description('Tags applied to the workbook.')
param tags object = {}

@description('Application Insights component the workbook reads and is linked to.')
param applicationInsightsId string

@description('Display name of the workbook (unique in the resource group for this source).')
param displayName string = 'inqom-bridge operations'

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  // A workbook's resource name must be a GUID; derived, so that re-provisioning updates it in place.
  name: guid(resourceGroup().id, applicationInsightsId, 'inqom-bridge-operations')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    sourceId: applicationInsightsId
    version: 'Notebook/1.0'
    serializedData: replace(loadTextContent('workbook.json'), '__APPINSIGHTS_ID__', applicationInsightsId)
  }
}

output id string = workbook.id
