// One watched subscription: its Event Grid system topic and one event subscription per function,
// filtered to exactly the VM operations that function handles (tests/test_infra.py checks the lists
// against the handlers). Undeliverable events go to the dead-letter container after 24 hours.
// Event Grid's own view of the deliveries is alerted on here too (metric alerts on the topic, in its
// resource group): an event dead-lettered, dropped, or failing delivery again and again.
param subscriptionId string
param functionAppId string
param deliveryIdentityId string
param deadLetterStorageId string
param deadLetterContainerName string
@description('The abbreviation system topics are named with (abbreviations.json).')
param topicPrefix string
param createEventSubscriptions bool
param tags object
@description('Resource id of the action group the metric alerts notify (empty: they show in the portal only).')
param actionGroupId string
@description('The name of the subscription\'s existing Microsoft.Resources.Subscriptions system topic in this resource group, when it has one (Azure allows one per subscription): the event subscriptions attach to it. Empty: the template creates the topic.')
param existingSystemTopicName string = ''

var createTopic = empty(existingSystemTopicName)
var topicName = createTopic ? '${topicPrefix}responder-${uniqueString(subscriptionId)}' : existingSystemTopicName

var vmSubject = '/providers/Microsoft.Compute/virtualMachines/'

var functions = [
  {
    // A template or the portal writes the VM first and each extension (Entra join, AD join, the AVD
    // registration) later, as its own operation: the check runs again for the VM once they land.
    name: 'on_vm_created'
    eventTypes: [ 'Microsoft.Resources.ResourceWriteSuccess' ]
    operations: [
      'Microsoft.Compute/virtualMachines/write'
      'Microsoft.Compute/virtualMachines/extensions/write'
    ]
  }
  {
    name: 'on_vm_power_changed'
    eventTypes: [ 'Microsoft.Resources.ResourceActionSuccess' ]
    operations: [
      'Microsoft.Compute/virtualMachines/deallocate/action'
      'Microsoft.Compute/virtualMachines/powerOff/action'
      'Microsoft.Compute/virtualMachines/start/action'
      'Microsoft.Compute/virtualMachines/restart/action'
      'Microsoft.Compute/virtualMachines/redeploy/action'
    ]
  }
  {
    name: 'on_vm_deleted'
    eventTypes: [ 'Microsoft.Resources.ResourceDeleteSuccess' ]
    operations: [ 'Microsoft.Compute/virtualMachines/delete' ]
  }
]

resource topic 'Microsoft.EventGrid/systemTopics@2025-02-15' = if (createTopic) {
  name: topicName
  location: 'global'
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${deliveryIdentityId}': {} }
  }
  properties: {
    source: '/subscriptions/${subscriptionId}'
    topicType: 'Microsoft.Resources.Subscriptions'
  }
}

// An existing topic (made by the portal, Defender for Cloud, other automation) is left as it is.
resource existingTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = if (!createTopic) {
  name: topicName
}

resource subscriptions 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = [
  for function in (createEventSubscriptions ? functions : []): {
    name: '${topicName}/${replace(function.name, '_', '-')}'
    dependsOn: [topic, existingTopic]
    properties: {
      eventDeliverySchema: 'EventGridSchema'
      destination: {
        endpointType: 'AzureFunction'
        properties: {
          resourceId: '${functionAppId}/functions/${function.name}'
          maxEventsPerBatch: 1
          preferredBatchSizeInKilobytes: 64
        }
      }
      filter: {
        includedEventTypes: function.eventTypes
        enableAdvancedFilteringOnArrays: true
        advancedFilters: [
          {
            operatorType: 'StringIn'
            key: 'data.operationName'
            values: function.operations
          }
          {
            operatorType: 'StringContains'
            key: 'subject'
            values: [ vmSubject ]
          }
        ]
      }
      retryPolicy: {
        maxDeliveryAttempts: 30
        eventTimeToLiveInMinutes: 1440
      }
      deadLetterWithResourceIdentity: {
        identity: {
          type: 'UserAssigned'
          userAssignedIdentity: deliveryIdentityId
        }
        deadLetterDestination: {
          endpointType: 'StorageBlob'
          properties: {
            resourceId: deadLetterStorageId
            blobContainerName: deadLetterContainerName
          }
        }
      }
    }
  }
]

// Microsoft.EventGrid/systemTopics metrics (Azure Monitor's supported-metrics reference): each is a
// Total count per minute with the dimension EventSubscriptionName, split on here so the alert names
// the function whose deliveries fail. Dead-lettered or dropped: one event is already one too many
// (a lost "VM deleted" is a lost cleanup). Failed attempts: Event Grid retries, so a few are normal.
var deliveryAlerts = [
  {
    name: 'eventgrid-dead-lettered'
    title: 'Event Grid dead-lettered events for the responder'
    severity: 1
    metricName: 'DeadLetteredCount'
    threshold: 0
  }
  {
    name: 'eventgrid-dropped'
    title: 'Event Grid dropped events for the responder (neither delivered nor dead-lettered)'
    severity: 1
    metricName: 'DroppedEventCount'
    threshold: 0
  }
  {
    name: 'eventgrid-delivery-failing'
    title: 'Event Grid keeps failing to deliver events to the responder'
    severity: 2
    metricName: 'DeliveryAttemptFailCount'
    threshold: 5
  }
]

var topicId = resourceId('Microsoft.EventGrid/systemTopics', topicName)
// The responder's own event subscriptions, as named and upper-cased (Event Grid upper-cases a
// subscription's name where it writes it, e.g. dead-letter blob paths): either spelling matches.
var ownSubscriptionNames = [for function in functions: replace(function.name, '_', '-')]
var ownSubscriptionNamesUpper = [for function in functions: toUpper(replace(function.name, '_', '-'))]
var subscriptionNames = concat(ownSubscriptionNames, ownSubscriptionNamesUpper)

resource deliveryAlertRules 'Microsoft.Insights/metricAlerts@2026-01-01' = [
  for alert in deliveryAlerts: {
    name: 'alert-intune-vm-responder-${alert.name}'
    location: 'global'
    tags: tags
    dependsOn: [topic, existingTopic]
    properties: {
      description: 'Intune VM responder: ${alert.title}, on ${topicName}. See the README, section Operate.'
      severity: alert.severity
      enabled: true
      scopes: [topicId]
      evaluationFrequency: 'PT5M'
      windowSize: 'PT15M'
      criteria: {
        'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
        allOf: [
          {
            criterionType: 'StaticThresholdCriterion'
            name: alert.metricName
            metricNamespace: 'Microsoft.EventGrid/systemTopics'
            metricName: alert.metricName
            dimensions: [
              {
                name: 'EventSubscriptionName'
                operator: 'Include'
                values: subscriptionNames // the responder's own: a shared topic's other consumers are not ours
              }
            ]
            operator: 'GreaterThan'
            threshold: alert.threshold
            timeAggregation: 'Total'
          }
        ]
      }
      autoMitigate: true
      actions: empty(actionGroupId) ? [] : [{ actionGroupId: actionGroupId }]
    }
  }
]

output systemTopicId string = topicId
