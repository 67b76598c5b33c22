// Alerts an operator acts on, all to one action group (e-mail). Log search alerts query the
// Application Insights component (classic table names: customMetrics, requests) or the Log
// Analytics workspace (StorageQueueLogs from the documents account's diagnostic settings); the
// dead-letter alert is a platform metric alert on the Event Grid system topic.
//
// Every name a query relies on is a contract with the app: metric names, attribute keys and
// outcome values come from shared/metrics.py, function names from functions/*.py, and
// tests/test_infra.py checks each query against them (and the platform columns against
// Microsoft's table schemas). Keep the queries literal: that test reads them from this file.

@description('Azure region of the log search alert rules (that of Application Insights and the workspace).')
param location string

@description('Tags applied to the rules and the action group.')
param tags object = {}

@description('Name prefix of the alert rules and the action group.')
param namePrefix string

@description('E-mail address that receives every alert; empty = the action group has no receiver (set ALERT_EMAIL).')
param alertEmail string = ''

@description('Application Insights component id (scope of the app-telemetry alerts).')
param applicationInsightsId string

@description('Log Analytics workspace id (scope of the storage-log alerts).')
param logAnalyticsWorkspaceId string

@description('Event Grid system topic id (scope of the dead-letter metric alert).')
param eventGridSystemTopicId string

@description('Hours after which the oldest pending document raises an alert (documents awaiting review in Inqom can wait days; Stale is POLL_MAX_AGE_HOURS).')
@minValue(1)
param oldestPendingAlertHours int = 48

@description('Inqom refusals (429, 5xx, no answer) per 5 minutes that, three windows in a row, raise an alert.')
@minValue(1)
param inqomRefusalThreshold int = 20

@description('Failed function executions per function in 15 minutes that raise an alert (one failure is retried by the host).')
@minValue(1)
param functionFailureThreshold int = 5

@description('Minutes without a single poll_documents execution that raise an alert (several POLL_SCHEDULE periods).')
@allowed([
  'PT30M'
  'PT1H'
  'PT2H'
  'PT6H'
])
param pollSilenceWindow string = 'PT30M'

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-${namePrefix}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'inqombridge'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// ---- app telemetry (Application Insights: customMetrics from shared/metrics.py, requests from the host) ----

resource documentQuarantined 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-document-quarantined'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'inqom-bridge: a document was quarantined'
    description: 'A document went to the quarantine container with its reason (ledger QuarantineReason, blob metadata reason). Look at the workbook\'s top quarantine reasons, fix the file or the cause, then `python -m inqom_bridge_cli replay`.'
    severity: 2
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'customMetrics | where name == "inqom_bridge.documents" | where tostring(customDimensions.outcome) == "quarantined" | summarize quarantined = sum(valueSum)'
          metricMeasureColumn: 'quarantined'
          timeAggregation: 'Total'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

resource oldestPending 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-oldest-pending'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'inqom-bridge: a pending document is older than ${oldestPendingAlertHours} h'
    description: 'The poll tick measures the age of the oldest document still pending (uploaded, not yet archived). Check `python -m inqom_bridge_cli status` and the document in Inqom (awaiting review? rejected?).'
    severity: 3
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'customMetrics | where name == "inqom_bridge.oldest_pending_age_seconds" | summarize oldest = max(valueMax)'
          metricMeasureColumn: 'oldest'
          timeAggregation: 'Maximum'
          operator: 'GreaterThan'
          threshold: oldestPendingAlertHours * 3600
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

resource inqomRefusals 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-inqom-refusals'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'inqom-bridge: Inqom keeps refusing calls (429 / 5xx / no answer)'
    description: 'More than ${inqomRefusalThreshold} Inqom calls per 5 minutes answered 429 or 5xx, or not at all, for 15 minutes. 429s: another client shares the Inqom account, or INQOM_RATE_LIMIT is above what Inqom grants. 5xx / errors: Inqom is down; documents wait, none is lost.'
    severity: 2
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: 'customMetrics | where name == "inqom_bridge.inqom_calls" | extend status = tostring(customDimensions.status) | where status == "429" or status startswith "5" or status == "error" | summarize refused = sum(valueSum) by bin(timestamp, 5m)'
          metricMeasureColumn: 'refused'
          timeAggregation: 'Total'
          operator: 'GreaterThan'
          threshold: inqomRefusalThreshold
          failingPeriods: {
            numberOfEvaluationPeriods: 3
            minFailingPeriodsToAlert: 3
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

resource functionFailures 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-function-failures'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'inqom-bridge: a function keeps failing'
    description: 'More than ${functionFailureThreshold} failed executions of one function in 15 minutes (the Functions host\'s request telemetry). Open the failures in Application Insights; the exceptions table has the redacted tracebacks.'
    severity: 2
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'requests | where tobool(success) == false | summarize failures = count() by operation_Name'
          metricMeasureColumn: 'failures'
          timeAggregation: 'Total'
          dimensions: [
            {
              name: 'operation_Name'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: functionFailureThreshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

resource pollSilent 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-poll-silent'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'inqom-bridge: the poll tick has not run'
    description: 'No poll_documents execution in ${pollSilenceWindow}: nothing is being polled or archived and the pending gauges go stale. Check the app is running and POLL_SCHEDULE.'
    severity: 1
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: pollSilenceWindow
    criteria: {
      allOf: [
        {
          query: 'requests | where operation_Name == "poll_documents" | summarize ticks = count()'
          metricMeasureColumn: 'ticks'
          timeAggregation: 'Total'
          operator: 'LessThan'
          threshold: 1
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// ---- storage resource logs (Log Analytics: the documents account's diagnostic settings) ----

resource poisonMessages 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-poison-messages'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'inqom-bridge: a message reached a poison queue'
    description: 'The Functions host moved a message to a -poison queue (enfact-invoices-poison: an enFact push that failed maxDequeueCount times; webjobs-blobtrigger-poison: a drop the blob trigger gave up on). Peek the queue, fix the cause, re-enqueue or re-drop.'
    severity: 2
    enabled: true
    scopes: [
      logAnalyticsWorkspaceId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'StorageQueueLogs | where OperationName == "PutMessage" | extend queue = tostring(split(tostring(parse_url(Uri).Path), "/")[1]) | where queue endswith "-poison" | summarize poisoned = count() by queue'
          metricMeasureColumn: 'poisoned'
          timeAggregation: 'Total'
          dimensions: [
            {
              name: 'queue'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}

// ---- platform metric (Event Grid system topic) ----

resource deadLettered 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-events-dead-lettered'
  location: 'global'
  tags: tags
  properties: {
    description: 'Event Grid gave up delivering an inbox BlobCreated event (30 attempts / 24 h) and wrote it to the eventgrid-deadletter container. The drop is still in the inbox: the repair sweep adopts it after REPAIR_GRACE_MINUTES; read the dead-letter blob for the delivery error.'
    severity: 2
    enabled: true
    scopes: [
      eventGridSystemTopicId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'dead-lettered'
          metricNamespace: 'Microsoft.EventGrid/systemTopics'
          metricName: 'DeadLetteredCount'
          timeAggregation: 'Total'
          operator: 'GreaterThan'
          threshold: 0
        }
      ]
    }
    autoMitigate: true
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}

output actionGroupId string = actionGroup.id
