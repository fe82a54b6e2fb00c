// One watched subscription: its Event Grid system topic and one event subscription per function,
// filtered to exactly the VM operations that function handles (tests/test_infra.py checks the lists
// against the handlers). Undeliverable events go to the dead-letter container after 24 hours.
param subscriptionId string
param functionAppId string
param deliveryIdentityId string
param deadLetterStorageId string
param deadLetterContainerName string
@description('The abbreviation system topics are named with (abbreviations.json).')
param topicPrefix string
param createEventSubscriptions bool
param tags object
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

output systemTopicId string = resourceId('Microsoft.EventGrid/systemTopics', topicName)
