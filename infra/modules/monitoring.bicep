// What an admin looks at: a workbook over the responder's log lines (listed under the app's
// Application Insights and in Azure Monitor's workbook gallery), and alerts on what needs a person.
// Every query reads the JSON lines the app writes (AppTraces of the app's workspace; the field names
// are documented in the README) and is checked offline by Microsoft's Kusto language service in
// ./scripts/test (tests/test_monitoring.py). The alerts are listed in ../monitoring/alerts.json.
param location string
param tags object
param workspaceId string
@description('Resource id of the app\'s Application Insights component: the workbook is listed under it.')
param applicationInsightsId string
@description('E-mail address that receives the alerts; empty: no action group is made for it.')
param alertEmail string
@description('Resource id of an existing action group for the alerts; when given, it is used and none is made.')
param existingActionGroupId string
@description('Malformed or misrouted deliveries per hour before the bad-events alert fires.')
param badEventsPerHour int
@description('Requests Graph or ARM throttled (429) per half hour, two half hours in a row, before the throttling alert fires.')
param throttledPerHalfHour int
@minValue(7)
@description('Days a device may stay marked as deallocated before the marked-too-long alert names its VM (7 or more).')
param markedDaysAlert int
@description('Name of the action group that mails the alerts.')
param actionGroupName string

// One line per query file in ../monitoring/alerts/ (loadTextContent takes a literal path only),
// keyed by the file name alerts.json gives as each alert's `query`.
var queries = {
  'access-denied.kql': loadTextContent('../monitoring/alerts/access-denied.kql')
  'bad-events.kql': loadTextContent('../monitoring/alerts/bad-events.kql')
  'blast-radius-cap.kql': loadTextContent('../monitoring/alerts/blast-radius-cap.kql')
  'cleanup-needs-review.kql': loadTextContent('../monitoring/alerts/cleanup-needs-review.kql')
  'dead-lettered-events.kql': loadTextContent('../monitoring/alerts/dead-lettered-events.kql')
  'device-check-parked.kql': loadTextContent('../monitoring/alerts/device-check-parked.kql')
  'error-findings.kql': loadTextContent('../monitoring/alerts/error-findings.kql')
  'function-failures.kql': loadTextContent('../monitoring/alerts/function-failures.kql')
  'marked-too-long.kql': loadTextContent('../monitoring/alerts/marked-too-long.kql')
  'poison-queue.kql': loadTextContent('../monitoring/alerts/poison-queue.kql')
  'reconcile-incomplete.kql': loadTextContent('../monitoring/alerts/reconcile-incomplete.kql')
  'reconcile-missing.kql': loadTextContent('../monitoring/alerts/reconcile-missing.kql')
  'request-refused.kql': loadTextContent('../monitoring/alerts/request-refused.kql')
  'sustained-throttling.kql': loadTextContent('../monitoring/alerts/sustained-throttling.kql')
}

// The query's own default line, replaced by the deployment's value.
var markedDaysLine = 'let markedDaysAlert = 14;'
var deployedQueries = union(queries, {
  'marked-too-long.kql': replace(queries['marked-too-long.kql'], markedDaysLine, 'let markedDaysAlert = ${markedDaysAlert};')
})

// The module parameters an alert's `thresholdParameter` may name.
var thresholds = {
  badEventsPerHour: badEventsPerHour
  throttledPerHalfHour: throttledPerHalfHour
}

// Each alert of alerts.json with the fields it may leave out: no look-back of its own, one failing
// period, no mute, its own threshold.
var alertDefaults = {
  lookBack: null
  failingPeriods: 1
  mute: null
  thresholdParameter: ''
}
var alerts = [for alert in loadJsonContent('../monitoring/alerts.json').alerts: union(alertDefaults, alert)]

// The workbook, its queries pointed at the workspace: opened from Application Insights or from the
// gallery, it reads the workspace tables (AppTraces, AppRequests), which Microsoft documents as
// queried from the Log Analytics workspace, not through the Application Insights resource.
var workbookContent = loadJsonContent('../monitoring/workbook.json')
var workbookItems = [for item in workbookContent.items: contains(item.content, 'query') ? union(item, { content: union(item.content, { crossComponentResources: [workspaceId] }) }) : item]
var workbookData = union(workbookContent, {
  fallbackResourceIds: [workspaceId]
  items: workbookItems
})

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(workspaceId, 'intune-vm-responder-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'Intune VM responder'
    category: 'workbook'
    // Listed under the app's Application Insights → Workbooks.
    sourceId: applicationInsightsId
    serializedData: string(workbookData)
  }
}

// The same workbook in Azure Monitor → Workbooks, the gallery an admin opens first.
resource workbookTemplate 'Microsoft.Insights/workbooktemplates@2020-11-20' = {
  name: 'intune-vm-responder-${uniqueString(workspaceId)}'
  location: location
  tags: tags
  properties: {
    author: 'Intune VM compliance responder'
    priority: 1
    galleries: [
      {
        name: 'Intune VM responder'
        category: 'Intune VM responder'
        type: 'workbook'
        resourceType: 'Azure Monitor'
        order: 100
      }
    ]
    templateData: workbookData
  }
}

var createActionGroup = empty(existingActionGroupId) && !empty(alertEmail)

resource mail 'Microsoft.Insights/actionGroups@2023-01-01' = if (createActionGroup) {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'vmresponder'
    enabled: true
    emailReceivers: [
      {
        name: 'admin'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// The action group every alert (these and the Event Grid metric alerts) notifies; empty: none.
var actionGroupId = empty(existingActionGroupId) ? (createActionGroup ? mail.id : '') : existingActionGroupId

// severity: 0 critical .. 4 verbose. Each query's header says what it means; the README says what to do.
resource rules 'Microsoft.Insights/scheduledQueryRules@2026-03-01' = [
  for alert in alerts: {
    name: 'alert-intune-vm-responder-${alert.name}'
    location: location
    tags: tags
    kind: 'LogAlert'
    properties: {
      displayName: alert.title
      description: 'Intune VM responder: ${alert.title}. See the README, section Operate.'
      severity: alert.severity
      enabled: true
      scopes: [workspaceId]
      evaluationFrequency: alert.frequency
      windowSize: alert.window
      overrideQueryTimeRange: alert.lookBack
      criteria: {
        allOf: [
          {
            query: deployedQueries[alert.query]
            timeAggregation: 'Count'
            dimensions: [for dimension in alert.dimensions: {
              name: dimension
              operator: 'Include'
              values: ['*']
            }]
            operator: 'GreaterThan'
            threshold: contains(thresholds, alert.thresholdParameter) ? thresholds[alert.thresholdParameter] : alert.threshold
            failingPeriods: {
              numberOfEvaluationPeriods: alert.failingPeriods
              minFailingPeriodsToAlert: alert.failingPeriods
            }
          }
        ]
      }
      // Stateful: one notice when the condition starts and one when it clears. Otherwise each
      // evaluation that finds rows notifies, unless muted for `mute` after it fired.
      autoMitigate: alert.stateful
      muteActionsDuration: alert.mute
      actions: {
        actionGroups: empty(actionGroupId) ? [] : [actionGroupId]
      }
    }
  }
]

output workbookId string = workbook.id
output workbookTemplateId string = workbookTemplate.id
output actionGroupId string = actionGroupId
