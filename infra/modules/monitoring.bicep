// Log Analytics workspace + workspace-based Application Insights.
// Local (instrumentation-key) authentication is disabled on both: telemetry is accepted only
// from Microsoft Entra identities holding Monitoring Metrics Publisher on the component
// (granted in roles.bicep; the app sets APPLICATIONINSIGHTS_AUTHENTICATION_STRING).

@description('Log Analytics workspace name.')
param logAnalyticsName string

@description('Application Insights component name.')
param applicationInsightsName string

@description('Azure region.')
param location string

@description('Tags applied to the resources.')
param tags object = {}

@description('Days Log Analytics keeps data (30 is included in the ingestion price).')
@minValue(30)
@maxValue(730)
param retentionInDays int = 90

// ---- issue 22: daily cap and long-term retention of the audit tables ----
@description('Log Analytics daily ingestion cap in GB (workspaceCapping.dailyQuotaGb); 0 = no cap (sent as -1). When reached, ingestion stops until the daily reset, audit logs included: size it well above the normal volume.')
@minValue(0)
param dailyQuotaGb int = 0

@description('Total retention in days (interactive + long-term) of the audit tables: the documents\' resource logs, the function logs, and the vault\'s and Event Grid\'s logs (AzureDiagnostics). 3653 = ten years, the archive\'s duty (L123-22); max 4383 (12 years).')
// Not below the workspace's interactive retention (90 days): total retention cannot be shorter.
@minValue(90)
@maxValue(4383)
param auditTotalRetentionInDays int = 3653

// Where the audit trail lands (the diagnostic settings of storage.bicep, functionapp.bicep,
// keyvault.bicep and eventgrid.bicep). The vault's `audit` and the system topic's `DeliveryFailures`
// have no resource-specific table here: they land in AzureDiagnostics.
var auditTables = [
  'StorageBlobLogs'
  'StorageQueueLogs'
  'StorageTableLogs'
  'FunctionAppLogs'
  'AzureDiagnostics'
]

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    workspaceCapping: {
      dailyQuotaGb: (dailyQuotaGb == 0) ? -1 : dailyQuotaGb
    }
    features: {
      disableLocalAuth: true
      enableLogAccessUsingOnlyResourcePermissions: true
    }
  }
}

// Interactive retention stays the workspace's (retentionInDays); older rows move to long-term
// retention (queried with search jobs or restore, billed per GB-month at a fraction of interactive).
resource auditTableRetention 'Microsoft.OperationalInsights/workspaces/tables@2023-09-01' = [for table in auditTables: {
  parent: workspace
  name: table
  properties: {
    retentionInDays: retentionInDays
    totalRetentionInDays: auditTotalRetentionInDays
  }
}]

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
    DisableLocalAuth: true
    DisableIpMasking: false
  }
}

output workspaceId string = workspace.id
output workspaceName string = workspace.name
output applicationInsightsId string = appInsights.id
output applicationInsightsName string = appInsights.name
// The connection string only locates the ingestion endpoint: with DisableLocalAuth the
// instrumentation key inside it is not a credential (ingestion requires an Entra token).
output connectionString string = appInsights.properties.ConnectionString
