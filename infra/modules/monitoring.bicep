// What an admin looks at: a workbook over the responder's log lines, and alerts on what needs a
// person. Every query reads the JSON lines the app writes (AppTraces of the app's workspace; the
// field names are documented in the README) and is checked offline by Microsoft's Kusto language
// service in ./scripts/test (tests/test_monitoring.py).
param location string
param tags object
param workspaceId string
@description('E-mail address that receives the alerts; empty: the alerts fire in the portal only.')
param alertEmail string
@description('Malformed or misrouted deliveries per hour before the bad-events alert fires.')
param badEventsPerHour int
@description('Name of the action group that mails the alerts.')
param actionGroupName string

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(workspaceId, 'intune-vm-responder-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'Intune VM responder'
    category: 'workbook'
    sourceId: workspaceId
    serializedData: string(loadJsonContent('../monitoring/workbook.json'))
  }
}

resource mail 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
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

// severity: 0 critical .. 4 verbose. Each query's header says what it means; the README says what to do.
var alerts = [
  {
    name: 'cleanup-needs-review'
    title: 'A cleanup was parked, refused or needs review'
    severity: 2
    query: loadTextContent('../monitoring/alerts/cleanup-needs-review.kql')
    threshold: 0
    window: 'PT15M'
  }
  {
    name: 'blast-radius-cap'
    title: 'Deletions are held back by the blast-radius cap'
    severity: 1
    query: loadTextContent('../monitoring/alerts/blast-radius-cap.kql')
    threshold: 0
    window: 'PT15M'
  }
  {
    name: 'access-denied'
    title: 'Graph or ARM refused the app identity (missing role)'
    severity: 1
    query: loadTextContent('../monitoring/alerts/access-denied.kql')
    threshold: 0
    window: 'PT15M'
  }
  {
    name: 'error-findings'
    title: 'A VM fails an Intune prerequisite'
    severity: 3
    query: loadTextContent('../monitoring/alerts/error-findings.kql')
    threshold: 0
    window: 'PT1H'
  }
  {
    name: 'bad-events'
    title: 'Malformed or misrouted events'
    severity: 3
    query: loadTextContent('../monitoring/alerts/bad-events.kql')
    threshold: badEventsPerHour
    window: 'PT1H'
  }
  {
    name: 'poison-queue'
    title: 'Cleanup messages wait in the poison queue'
    severity: 2
    query: loadTextContent('../monitoring/alerts/poison-queue.kql')
    threshold: 0
    window: 'P1D'
  }
]

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
      evaluationFrequency: alert.window == 'P1D' ? 'PT1H' : alert.window
      windowSize: alert.window
      criteria: {
        allOf: [
          {
            query: alert.query
            timeAggregation: 'Count'
            operator: 'GreaterThan'
            threshold: alert.threshold
            failingPeriods: {
              numberOfEvaluationPeriods: 1
              minFailingPeriodsToAlert: 1
            }
          }
        ]
      }
      autoMitigate: false
      // A daily count is checked hourly: one notice a day, not 24.
      muteActionsDuration: alert.window == 'P1D' ? 'P1D' : null
      actions: {
        actionGroups: empty(alertEmail) ? [] : [mail.id]
      }
    }
  }
]

output workbookId string = workbook.id
